"""Several runs at once: cross-run Compare against a hand computation from two runs' `export --kind
pairs` files, runs on another dataset or reference refused with a reason, overlaid curves of 1, 2
and 3 runs, the Runs page's sweep table (each setting with its source) and `?runs=` links.

The world: one tiny reference and one TRL-style run folder (tests/cli_world.py), scored five times:
`sweep-a` (β from the trainer's training_args.json, with its learning rate), `sweep-b` (the same
folder, β overridden), `sweep-c` (one checkpoint as a plain --policy: defaults), `other-data` (the
same folder on another dataset) and `other-ref` (another reference model)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from cli_world import build_world, write_pairs  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from did_core import sweep  # noqa: E402
from did_core.config import ScoreSettings  # noqa: E402
from did_core.losses import pair_table  # noqa: E402
from did_core.workspace import Workspace  # noqa: E402
from did_ui import selection  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COMPARABLE = ["sweep-a", "sweep-b", "sweep-c"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from did_core.score import run_score
    from did_core.tiny import tiny_llama

    w = build_world(tmp_path_factory.mktemp("world"), n_pairs=12)
    (w["run"] / "training_args.json").write_text(json.dumps({"beta": 0.25, "learning_rate": 1e-3, "bf16": False}))
    other_ref = w["ref"].parent / "other-reference"
    tiny_llama(len(w["tokenizer"]), seed=1).save_pretrained(other_ref)
    w["tokenizer"].save_pretrained(other_ref)
    other_data = write_pairs(w["ref"].parent / "other.jsonl", 12, seed=5)
    root = tmp_path_factory.mktemp("ws")
    quick = ScoreSettings(token_level=False)
    ckpt2 = str(w["run"] / "checkpoint-2")
    for name, data, ref, kwargs in (
            ("sweep-a", w["data"], w["ref"], {"run_dir": str(w["run"])}),
            ("sweep-b", w["data"], w["ref"], {"run_dir": str(w["run"]), "overrides": {"beta": 0.5}}),
            ("sweep-c", w["data"], w["ref"], {"policies": [ckpt2]}),
            ("other-data", other_data, w["ref"], {"run_dir": str(w["run"])}),
            ("other-ref", w["data"], other_ref, {"policies": [ckpt2]})):
        run_score(str(data), str(ref), workspace=root, name=name, settings=quick, **kwargs)
    return {"root": root, "ckpt2": ckpt2}


def _export(root: Path, run: str, out: Path) -> pd.DataFrame:
    from did_core.__main__ import main

    assert main(["export", "--workspace", str(root), "--out", str(out), "--kind", "pairs", "--run", run]) in (0, None)
    return pd.read_csv(out, dtype={"pair_id": str})


def _by_hand(a_rows: pd.DataFrame, b_rows: pd.DataFrame) -> pd.DataFrame:
    """The cross-run comparison from two export files' rows (one model each), column by column."""
    a, b = a_rows.set_index("pair_id"), b_rows.set_index("pair_id").loc[a_rows["pair_id"]]
    out = pd.DataFrame(index=a.index)
    for col in ("logp_chosen", "logp_rejected", "log_margin", "dpo_loss"):
        out[f"{col}_a"], out[f"{col}_b"] = a[col], b[col]
        out[f"delta_{col}"] = b[col] - a[col]
    out["did_ba_chosen"] = b["logp_chosen"] - a["logp_chosen"]
    out["did_ba_rejected"] = b["logp_rejected"] - a["logp_rejected"]
    q = [1 / (1 + math.exp(-(w - lo))) for w, lo in zip(out["did_ba_chosen"], out["did_ba_rejected"], strict=True)]
    out["q_ba_chosen"] = q
    out["did_entropy_ba"] = [-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in q]
    return out


def _app(monkeypatch, root: Path, page: str, **params: str) -> AppTest:
    monkeypatch.setenv("DID_WORKSPACE", str(root))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    monkeypatch.setenv("DID_WARM_UP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.query_params.update(params)
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_cross_run_compare_equals_the_exports_by_hand(monkeypatch, world, tmp_path):
    """A = sweep-c's only checkpoint (β 0.1, a default), B = sweep-b's checkpoint-4 (β 0.5, an
    override): the page's per-pair table equals the same computation from the two runs' export files
    (each side's DPO loss at its own β), per pair, to 1e-9; so does did_core.compare.compare_runs."""
    from did_core.compare import compare_runs
    from did_core.run_settings import RunSettings

    root, a = world["root"], world["ckpt2"]
    exp_a, exp_b = _export(root, "sweep-c", tmp_path / "c.csv"), _export(root, "sweep-b", tmp_path / "b.csv")
    want = _by_hand(exp_a[exp_a["model"] == a], exp_b[exp_b["model"] == "checkpoint-4"])
    assert want["delta_logp_chosen"].abs().max() > 1e-3  # two different checkpoints: not a table of zeros

    at = _app(monkeypatch, root, "compare", run="sweep-b", ckpt="checkpoint-4", a_run="sweep-c", a=a)
    assert not at.warning, [w.value for w in at.warning]
    assert at.sidebar.selectbox(key="pick_a_run").options == ["sweep-b", "sweep-a", "sweep-c"]  # B's run first
    assert at.sidebar.selectbox(key="pick_a_run").value == "sweep-c"
    assert any("sweep\\-c · " in s.value and "→ B = sweep\\-b · checkpoint\\-4" in s.value for s in at.subheader)
    shown = next(d.value for d in at.dataframe if "delta_log_margin" in d.value.columns).set_index("pair_id")
    assert len(shown) == len(want) == 12
    ws = Workspace(root)
    core = compare_runs(ws.pairs("sweep-c"), a, RunSettings(beta=0.1), ws.pairs("sweep-b"), "checkpoint-4",
                        RunSettings(beta=0.5))
    for table in (shown.loc[want.index], core.loc[want.index]):
        for col in want.columns:
            np.testing.assert_allclose(table[col].to_numpy(float), want[col].to_numpy(float), rtol=0, atol=1e-9,
                                       err_msg=col)
    labels = {m.label for m in at.metric}
    assert "loss (sigmoid)" in labels and "mean H(q_B/A) over pairs" in labels


def test_runs_on_another_dataset_or_reference_are_refused_with_a_reason(monkeypatch, world):
    root = world["root"]
    ws = Workspace(root)
    manifests = {n: ws.run(n) for n in ws.run_names()}
    offered, refused = sweep.comparable_runs(manifests, "sweep-a")
    assert offered == COMPARABLE
    assert refused["other-data"] == "other-data was scored on another dataset (other.jsonl)"
    assert refused["other-ref"].startswith("other-ref was scored against another reference")
    at = _app(monkeypatch, root, "compare", run="sweep-a", a_run="other-data")
    assert [w.value for w in at.warning] == [
        "Run 'other\\-data' is not offered here\\: other\\-data was scored on another dataset \\(other\\.jsonl\\)\\."]
    assert at.sidebar.selectbox(key="pick_a_run").options == COMPARABLE
    assert at.sidebar.selectbox(key="pick_a_run").value == "sweep-a"  # A falls back to B's own run
    assert "a_run" not in at.query_params  # the address says what is shown
    refusal = [c.value for c in at.caption if "are not offered" in c.value]
    assert len(refusal) == 1 and "other\\-data" in refusal[0] and "other\\-ref" in refusal[0]
    assert refusal[0].count(". ") == 0  # one sentence


def _overlay(at: AppTest, key: str):
    import plotly.io

    (fig,) = [plotly.io.from_json(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id]
    return fig


def _values(v) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(v["bdata"]), v["dtype"]) if isinstance(v, dict) else np.asarray(v, float)


@pytest.mark.parametrize("runs", [["sweep-a"], ["sweep-a", "sweep-b"], ["sweep-a", "sweep-b", "sweep-c"]])
def test_training_curves_overlay_one_two_and_three_runs(monkeypatch, world, runs):
    """One colour per run; per run and panel its median (the run's own median, computed here) and
    25–75 % band; each run's trainer log dashed in its colour (sweep-c has none); the shares too."""
    at = _app(monkeypatch, world["root"], "curves", run="sweep-a", runs=selection.runs_value(runs))
    assert at.sidebar.multiselect(key="pick_runs").value == runs
    at.multiselect(key="curves_quantities").set_value(["logp_chosen", "loss"]).run()
    fig = _overlay(at, "curves-overlay")
    medians = [t for t in fig.data if t.name in runs]
    assert [t.name for t in medians] == runs * 2  # one per run in each of the two panels
    assert len({t.line.color for t in medians}) == len(runs)
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2 * len(runs)
    trainer = sorted({t.name for t in fig.data if t.line.dash == "dash"})
    assert trainer == [f"{r}: trainer log (train batches)" for r in runs if r != "sweep-c"]
    ws = Workspace(world["root"])
    for trace in (t for t in medians if t.xaxis == "x"):  # the log π(y_w) panel
        pairs = ws.pairs(trace.name)
        for step, value in zip(trace.x, _values(trace.y), strict=True):
            values = (pairs.drop_duplicates("pair_id")["ref_logp_chosen"] if step == 0
                      else pairs.loc[pairs["step"] == step, "logp_chosen"])
            assert value == pytest.approx(float(np.median(values)))
    shares = _overlay(at, "shares-overlay")
    assert {t.name for t in shares.data if t.showlegend is not False} >= set(runs)
    for page, key in (("margins", "ordering-overlay"), ("entropy", "entropy-overlay")):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception and not at.warning, page
        assert {t.name for t in _overlay(at, key).data} >= set(runs), page


def test_a_runs_link_with_an_unknown_run_warns_and_keeps_the_others(monkeypatch, world):
    at = _app(monkeypatch, world["root"], "curves", runs="sweep-b,nope")
    assert [w.value for w in at.warning] == ["No run 'nope' in this workspace; it is left out\\."]
    assert at.query_params["runs"] == "sweep-b"
    assert {t.name for t in _overlay(at, "curves-overlay").data} >= {"sweep-b"}


def test_the_sweep_table_lists_each_runs_settings_with_their_source(monkeypatch, world):
    at = _app(monkeypatch, world["root"], "runs", run="sweep-a", runs="sweep-a,sweep-b")
    table = next(d.value for d in at.dataframe if "β source" in d.value.columns).set_index("run")
    assert list(table.index) == ["other-data", "other-ref", *COMPARABLE]
    assert table.loc["sweep-a", ["β", "β source", "learning rate", "lr source"]].tolist() == [0.25, "trainer", 1e-3,
                                                                                            "trainer"]
    assert table.loc["sweep-b", ["β", "β source"]].tolist() == [0.5, "override"]
    assert table.loc["sweep-c", ["β", "β source", "lr source"]].tolist() == [0.1, "default", "not recorded"]
    assert np.isnan(table.loc["sweep-c", "learning rate"])
    assert table.loc["sweep-a", ["loss type", "loss source", "max length", "max length source", "numerics"]].tolist() \
        == ["sigmoid", "default", "1024", "default", "exact"]
    ws = Workspace(world["root"])
    summary = pair_table(ws.pairs("sweep-b"), ws.run_settings(ws.run("sweep-b")).settings)
    last = summary[summary["step"] == 4]
    assert table.loc["sweep-b", "final accuracy"] == pytest.approx(float(last["accuracy"].mean()))
    assert table.loc["sweep-b", "final loss"] == pytest.approx(float(last["loss"].mean()))
    links = {link.proto.label: dict(parse_qsl(link.proto.query_string)) for link in at.get("page_link")}
    assert links["Training curves, overlaid"] == {"run": "sweep-a", "runs": "sweep-a,sweep-b"}
    assert links["Compare sweep\\-a → sweep\\-b"] == {"run": "sweep-b", "ckpt": "checkpoint-4", "a_run": "sweep-a",
                                                     "a": "checkpoint-4"}
    assert Workspace(world["root"]).run("sweep-a").extra["trainer_args"] == {"learning_rate": 1e-3}


