"""The DID entropy page (pages/entropy.py) as AppTest draws it: sequence-level estimates with their ESS."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ws(tmp_path) -> Path:
    """A workspace with one scored run, `audited` (a synthetic one: the page reads only its manifest and tables)."""
    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(tmp_path, n_pairs=20, n_checkpoints=2, seed=0, tokens=False, run_name="audited")
    return tmp_path


def test_entropy_page_writes_the_ess_beside_each_interval(monkeypatch, ws):
    """A run with sequence-level estimates (the demo's exact_did.parquet layout): the DID entropy page draws
    them with the mean ESS beside each point, the low-ESS point grey."""
    from did_core.workspace import Workspace
    from did_ui import figures

    space = Workspace(ws)
    manifest = space.run("audited")
    ckpt = manifest.checkpoints[0]
    space.write_run(manifest.replace(name="sampled", extra=dict(manifest.extra) | {"exact_did": "exact_did.parquet"}))
    pd.DataFrame({"model": [ckpt.name] * 2, "step": [ckpt.step] * 2, "prompt_id": [0, 1],
                  "snis_entropy": [1.0, 1.2], "snis_ci_low": [0.5, 0.7], "snis_ci_high": [1.5, 1.9],
                  "snis_ess": [4.0, 6.0], "snis_reliable": [False, False]}).to_parquet(
        space.run_dir("sampled") / "exact_did.parquet")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DID_WORKSPACE", str(ws))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    monkeypatch.setenv("DID_WARM_UP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.switch_page("pages/entropy.py")
    at.query_params["run"] = "sampled"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("mean effective sample size" in c.value for c in at.caption)
    # the interval's measured miscalibration is said where the interval is drawn (86%–99.5% today)
    from did_core.entropy import SNIS_MEASURED_COVERAGE

    low, high = SNIS_MEASURED_COVERAGE
    assert any(f"covered the exact value {low:.0%}–{high:.1%}" in c.value for c in at.caption), \
        [c.value for c in at.caption]
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    seq = next(f for f in figs if "Sequence-level" in str(f["layout"].get("title", "")))
    trace = next(t for t in seq["data"] if t.get("name") == "K samples, self-normalised IS")
    assert trace["text"] == ["ESS 5.0 (low)"] and trace["marker"]["color"] == [figures.UNRELIABLE]
