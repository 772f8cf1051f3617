"""The Runs page says where every setting came from: an override appears beside the trainer's value (and
in run.json), the loss shown is the trainer's own loss type, and each caption names the numerics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from cli_world import build_world  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from did_core import losses  # noqa: E402
from did_core.config import ScoreSettings  # noqa: E402
from did_core.score import run_score  # noqa: E402
from did_core.workspace import Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    w = build_world(tmp_path_factory.mktemp("world"), n_pairs=12)
    (w["run"] / "training_args.json").write_text(json.dumps(
        {"beta": 0.37, "max_length": 64, "loss_type": ["ipo"], "bf16": False}))
    root = tmp_path_factory.mktemp("ws")
    run_score(str(w["data"]), str(w["ref"]), run_dir=str(w["run"]), workspace=root, name="ipo-run",
              overrides={"beta": 0.2}, settings=ScoreSettings(token_level=False))
    return root


def _runs_page(monkeypatch, root: Path) -> AppTest:
    monkeypatch.setenv("DID_WORKSPACE", str(root))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    monkeypatch.setenv("DID_WARM_UP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "ipo-run"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_an_override_is_in_run_json_and_on_the_runs_page(monkeypatch, ws):
    m = Workspace(ws).run("ipo-run")
    assert m["run_settings"]["beta"] == {"value": 0.2, "source": "override", "trainer": 0.37}
    assert m["overrides"] == ["β 0.2 given; the trainer used 0.37"]
    at = _runs_page(monkeypatch, ws)
    assert any("Override: β 0.2 given; the trainer used 0.37" in w.value for w in at.warning)
    settings = next(d.value for d in at.dataframe if "source" in d.value.columns).set_index("setting")
    assert settings.loc["β"].tolist() == ["0.2", "override", "0.37"]
    assert settings.loc["loss type", "value"] == "ipo" and settings.loc["loss type", "source"] == "trainer"
    assert settings.loc["precision", "value"] == "fp32"
    assert any("Numbers: exact (float32 forward, float64 sums)" in c.value for c in at.caption)


def test_the_loss_shown_is_the_trainers_loss_type(monkeypatch, ws):
    pairs = Workspace(ws).pairs("ipo-run")
    at = _runs_page(monkeypatch, ws)
    summary = next(d.value for d in at.dataframe if "displaced share" in d.value.columns).set_index("checkpoint")
    for ckpt, g in pairs.groupby("model"):
        ipo = losses.trainer_loss(*(g[c].to_numpy() for c in losses.PAIR_COLUMNS), loss_types=("ipo",), beta=0.2)
        assert summary.loc[ckpt, "loss"] == pytest.approx(float(np.mean(ipo)))
        assert summary.loc[ckpt, "loss"] != pytest.approx(float(g["dpo_loss"].mean()))  # not the sigmoid loss
    assert any("Loss: the trainer's own loss type (ipo)" in c.value for c in at.caption)
    # a run scored in exact numerics only, by an fp32 trainer: the audit says why there is none
    assert any("ran in fp32" in c.value for c in at.caption)
