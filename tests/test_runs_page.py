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
    assert m.run_settings["beta"] == {"value": 0.2, "source": "override", "trainer": 0.37}
    assert m.overrides == ("β 0.2 given; the trainer used 0.37",)
    at = _runs_page(monkeypatch, ws)
    assert any("Override: β 0.2 given; the trainer used 0.37" in w.value for w in at.warning)
    settings = next(d.value for d in at.dataframe if "source" in d.value.columns).set_index("setting")
    assert settings.loc["β"].tolist() == ["0.2", "override", "0.37"]
    assert settings.loc["loss type", "value"] == "ipo" and settings.loc["loss type", "source"] == "trainer"
    assert settings.loc["precision", "value"] == "fp32"
    assert any("Numbers: exact (float32 forward, float64 sums)" in c.value for c in at.caption)


def test_the_loss_shown_is_the_trainers_loss_type(monkeypatch, ws):
    w = Workspace(ws)
    pairs = losses.pair_table(w.pairs("ipo-run"), w.run_settings(w.run("ipo-run")).settings)
    at = _runs_page(monkeypatch, ws)
    summary = next(d.value for d in at.dataframe if "displaced share" in d.value.columns).set_index("checkpoint")
    for ckpt, g in pairs.groupby("model"):
        ipo = losses.trainer_loss(*(g[c].to_numpy() for c in losses.PAIR_COLUMNS), loss_types=("ipo",), beta=0.2)
        assert summary.loc[ckpt, "loss"] == pytest.approx(float(np.mean(ipo)))
        assert summary.loc[ckpt, "loss"] != pytest.approx(float(g["dpo_loss"].mean()))  # not the sigmoid loss
    assert any("Loss: the trainer's own loss type (ipo)" in c.value for c in at.caption)
    # a run scored in exact numerics only, by an fp32 trainer: the audit says why there is none
    assert any("ran in fp32" in c.value for c in at.caption)


@pytest.fixture(scope="module")
def both_ws(tmp_path_factory) -> Path:
    """A run whose trainer ran in bf16: scored in both numerics by default."""
    w = build_world(tmp_path_factory.mktemp("world_bf16"), n_pairs=12)
    (w["run"] / "training_args.json").write_text(json.dumps({"beta": 0.25, "bf16": True,
                                                             "per_device_eval_batch_size": 4}))
    root = tmp_path_factory.mktemp("ws_bf16")
    run_score(str(w["data"]), str(w["ref"]), run_dir=str(w["run"]), workspace=root, name="ipo-run",
              settings=ScoreSettings(token_level=False))
    return root


def test_a_bf16_run_gets_both_numerics_a_picker_and_the_audit(monkeypatch, both_ws):
    from did_core.export import pairs_table

    assert Workspace(both_ws).run("ipo-run").numerics == ("exact", "trainer")
    at = _runs_page(monkeypatch, both_ws)
    pick = at.sidebar.selectbox(key="pick_numerics")
    assert pick.options == ["exact (float32 forward, float64 sums)", "trainer (the forward as the trainer ran it)"]
    assert any(s.value == "Precision audit" for s in at.subheader)
    labels = [m.label for m in at.metric]
    assert any(lbl.startswith("median |Δ log-prob|") for lbl in labels) and "rounding / signal (margins)" in labels
    assert any("Numbers: exact" in c.value for c in at.caption)
    pick.set_value("trainer").run()
    assert at.query_params["numerics"] == "trainer"
    assert any("Numbers: trainer numerics (bf16 autocast on cpu, eval batches of 4" in c.value for c in at.caption)
    summary = next(d.value for d in at.dataframe if "displaced share" in d.value.columns).set_index("checkpoint")
    w = Workspace(both_ws)
    trainer = losses.pair_table(w.pairs("ipo-run", "trainer"), w.run_settings(w.run("ipo-run")).settings)
    for ckpt, g in trainer.groupby("model"):
        assert summary.loc[ckpt, "mean reward margin"] == pytest.approx(float(g["reward_margin"].mean()))
    exported = pairs_table(both_ws, "ipo-run")
    assert sorted(exported["numerics"].unique()) == ["exact", "trainer"] and len(exported) == 2 * len(trainer)
    assert set(exported["accuracy"].unique()) <= {0, 1}


def test_a_deep_link_to_numerics_the_run_lacks_warns(monkeypatch, ws):
    monkeypatch.setenv("DID_WORKSPACE", str(ws))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    monkeypatch.setenv("DID_WARM_UP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "ipo-run"
    at.query_params["numerics"] = "trainer"
    at.run()
    assert any("was not scored in 'trainer' numerics; showing exact" in w.value for w in at.warning)
    assert not at.sidebar.get("selectbox") or all(s.key != "pick_numerics" for s in at.sidebar.selectbox)
