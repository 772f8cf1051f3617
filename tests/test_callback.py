"""DIDCallback (did_core/callback.py) on real TRL 1.16 DPO runs of a tiny Llama built from a config (CPU).

- exactness: each step of the live run equals `score --run` on the checkpoint saved at that step
  (≤ 1e-5 nats, exact numerics, eval and save every 2 steps), and the reference score is the one
  `score` computes (same fingerprint: reused, not recomputed);
- the callback changes nothing: training with and without it ends with identical weights and log;
- numerics="both": with the eval set as probe, the trainer numerics reproduce TRL's logged eval
  log-probs (≤ 1e-4); a `datasets.Dataset` probe is the same data as its file;
- PEFT LoRA: the reference is the base with its adapters off; equal to scoring the base and the
  merged adapter checkpoints separately;
- two torchrun ranks (gloo) give the live run of one process; kill -9 mid-step, then resume from the
  last checkpoint: each step once, equal to an uninterrupted run;
- FSDP / ZeRO-3 and bad arguments are refused at once; `untouched` puts RNG and train flags back;
- the dashboard: a live run is marked, and a page open on it shows a new step without a reload.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("trl")
from live_train import make_world, trainer_for  # noqa: E402

from did_core import chunked, live_run  # noqa: E402
from did_core.callback import DIDCallback, check_unsharded, untouched  # noqa: E402
from did_core.errors import InputError  # noqa: E402
from did_core.export import pairs_table  # noqa: E402
from did_core.manifest import RunManifest  # noqa: E402
from did_core.score import run_score  # noqa: E402
from did_core.workspace import Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "live_train.py"
COLUMNS = ["logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected", "did_entropy_chosen",
           "did_entropy_rejected", "n_tokens_chosen", "n_tokens_rejected"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("live_world"))


@pytest.fixture(scope="module")
def live(world, tmp_path_factory):
    """A 6-step run with the callback (eval and save every 2 steps)."""
    root = tmp_path_factory.mktemp("live")
    trainer = trainer_for(world, root / "out", steps=6,
                          callbacks=[DIDCallback(str(world / "probe.jsonl"), root / "ws", name="live")])
    freed: list = []  # what each policy turn asked chunked._free to collect
    real_free = chunked._free
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chunked, "_free", lambda device, dropped: freed.append(dropped) or real_free(device, dropped))
        trainer.train()
    return {"trainer": trainer, "ws": root / "ws", "out": root / "out", "freed": freed}


def test_a_live_step_runs_no_garbage_collection_for_the_trainers_model(live):
    """The live policy is the trainer's own model: its turn frees nothing, so `_free` is given no model
    to check (a full gc.collect() costs ~0.3 s a step with torch imported)."""
    assert len(live["freed"]) >= 3 and all(d is None for d in live["freed"]), live["freed"]


def _by_step(ws: Path, run: str) -> pd.DataFrame:
    df = Workspace(ws).pairs(run, "exact")
    return df.assign(step=df["step"].astype(int)).set_index(["step", "pair_id"]).sort_index()


def _max_diff(a: pd.DataFrame, b: pd.DataFrame, columns=COLUMNS) -> float:
    assert a.index.equals(b.index), (a.index, b.index)
    return max(float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)))) for c in columns)


def test_each_live_step_equals_score_run_on_its_checkpoint(world, live, tmp_path):
    ws = Workspace(live["ws"])
    m = ws.run("live")
    assert m.live is False and m.last_write  # training finished
    assert [(c.name, c.step) for c in m.checkpoints] == [("step-2", 2), ("step-4", 4), ("step-6", 6)]
    assert m.beta == 0.37 and m.run_settings["max_length"]["value"] == 64  # from the trainer's own args
    assert sorted(m.live_info["score_seconds"]) == ["2", "4", "6"]
    assert any("eval_loss" in h for h in m.trainer_log_history)
    stats = run_score(str(world / "probe.jsonl"), str(world / "reference"), run_dir=str(live["out"]),
                      workspace=tmp_path, name="r", numerics="exact")
    assert stats.chunks_computed > 0  # computed afresh in its own workspace
    assert _max_diff(_by_step(live["ws"], "live"), _by_step(tmp_path, "r")) <= 1e-5
    scored = Workspace(tmp_path).run("r")
    written = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())  # a score run's manifest round-trips
    assert scored.to_json() == written and RunManifest.from_json(written) == scored and not scored.is_live
    assert m.reference.score == scored.reference.score  # the same fingerprint: a stored one is reused
    assert m.extra["audit"] == scored.extra["audit"] and m.extra["audit"]["n_pairs"] == len(ws.pairs("live")) // 3
    a = ws.tokens("live", "step-4").set_index(["pair_id", "side", "position"])
    b = Workspace(tmp_path).tokens("r", "checkpoint-4").set_index(["pair_id", "side", "position"])
    assert (a["token_id"] == b["token_id"]).all() and np.abs(a["logp"] - b["logp"]).max() <= 1e-5
    exported = pairs_table(ws, "live")
    assert sorted(exported["model"].unique()) == ["step-2", "step-4", "step-6"]


def test_a_live_runs_manifest_round_trips_unchanged(live):
    """What the callback wrote reads back as a RunManifest whose to_json is that JSON, and back again."""
    written = json.loads((live["ws"] / "runs" / "live" / "run.json").read_text())
    m = Workspace(live["ws"]).run("live")
    assert m.to_json() == written and RunManifest.from_json(m.to_json()) == m
    assert m.is_live and {"live", "last_write", "live_info"} <= written.keys() and "samples" not in written
    assert [e.name for e in m.models] == [m.reference.name, "step-2", "step-4", "step-6"]


def test_training_with_the_callback_ends_with_identical_weights(world, live, tmp_path):
    plain = trainer_for(world, tmp_path / "out", steps=6)
    plain.train()
    a, b = live["trainer"].model.state_dict(), plain.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
              for h in live["trainer"].state.log_history]
    assert logged == [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
                      for h in plain.state.log_history]


def test_a_reference_score_stored_by_score_is_reused(world, live, tmp_path):
    run_score(str(world / "probe.jsonl"), str(world / "reference"), run_dir=str(live["out"]), workspace=tmp_path,
              name="r", numerics="exact")
    ref_fp = Workspace(tmp_path).run("r").reference.score
    meta = Workspace(tmp_path).open_store(ref_fp).meta_path
    before = meta.stat().st_mtime_ns
    trainer_for(world, tmp_path / "out", steps=2,
                callbacks=[DIDCallback(str(world / "probe.jsonl"), tmp_path, name="again")]).train()
    assert Workspace(tmp_path).run("again").reference.score == ref_fp
    assert meta.stat().st_mtime_ns == before  # not one chunk of the reference was rewritten


def test_trainer_numerics_reproduce_the_eval_metrics_trl_logged(world, tmp_path):
    """numerics="both": the probe is the eval set, so the trainer numerics at each step are what TRL logged."""
    from did_core.trainer_numerics import logged_means

    trainer = trainer_for(world, tmp_path / "out", steps=4,
                          callbacks=[DIDCallback(str(world / "probe.jsonl"), tmp_path, numerics="both", name="both")])
    trainer.train()
    assert trainer.args.bf16  # TRL's default: the logged numbers are bf16 ones
    logged = {h["step"]: h for h in trainer.state.log_history if "eval_logps/chosen" in h}
    ours = Workspace(tmp_path).pairs("both", "trainer")
    assert sorted(logged) == sorted(ours["step"].unique()) == [2, 4]
    for step, g in ours.groupby("step"):
        g = g.sort_values("pair_id", key=lambda c: c.astype(int))
        means = logged_means(g, trainer.args.per_device_eval_batch_size, ["logp_chosen", "logp_rejected"])
        assert abs(means["logp_chosen"] - logged[step]["eval_logps/chosen"]) <= 1e-4
        assert abs(means["logp_rejected"] - logged[step]["eval_logps/rejected"]) <= 1e-4
    exact = Workspace(tmp_path).pairs("both", "exact")
    assert (exact["logp_chosen"] - ours["logp_chosen"]).abs().max() > 0  # bf16 rounding shows


def test_a_datasets_dataset_probe_is_the_same_data_as_its_file(world):
    from datasets import Dataset

    from did_core.data import load_preference_data

    rows = [json.loads(x) for x in (world / "probe.jsonl").read_text().splitlines()]
    a, b = load_preference_data(Dataset.from_list(rows)), load_preference_data(str(world / "probe.jsonl"))
    assert a.fingerprint == b.fingerprint and a.source.startswith("datasets.Dataset")
    assert len(load_preference_data(Dataset.from_list(rows), limit=5).pairs) == 5


def test_peft_reference_is_the_base_with_adapters_off(world, tmp_path):
    pytest.importorskip("peft")
    trainer = trainer_for(world, tmp_path / "out", steps=4, peft=True,
                          callbacks=[DIDCallback(str(world / "probe.jsonl"), tmp_path / "ws", name="lora")])
    trainer.train()
    m = Workspace(tmp_path / "ws").run("lora")
    assert m.reference.name.endswith("(adapters off)") and [c.step for c in m.checkpoints] == [2, 4]
    assert (tmp_path / "out" / "checkpoint-4" / "adapter_config.json").is_file()
    run_score(str(world / "probe.jsonl"), str(world / "reference"), run_dir=str(tmp_path / "out"),
              workspace=tmp_path / "scored", name="r", numerics="exact")  # base + merged adapters, loaded apart
    a, b = _by_step(tmp_path / "ws", "lora"), _by_step(tmp_path / "scored", "r")
    assert _max_diff(a, b, ["ref_logp_chosen", "ref_logp_rejected"]) <= 1e-5
    assert _max_diff(a, b) <= 1e-4  # merging W + BA rounds each weight once


def _script(*args, env=None, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       env=env or _env(), timeout=600, **kw)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in extra.items()}}


@pytest.mark.slow
def test_two_torchrun_ranks_give_the_live_run_of_one_process(world, tmp_path):
    # One process accumulating 2 micro-batches of 2 pairs a step, and 2 ranks of 2 pairs: the same micro-batches
    # (TRL's bf16 autocast rounds by batch shape), so the same training up to the order gradients are summed in.
    _script(world, tmp_path / "out1", tmp_path / "ws1", "--steps", 4, "--batch", 2, "--accumulate", 2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29541",
           str(SCRIPT), world, tmp_path / "out2", tmp_path / "ws2", "--steps", "4", "--batch", "2"]
    p = subprocess.run(list(map(str, cmd)), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    two = Workspace(tmp_path / "ws2").run("live")
    assert [c.step for c in two.checkpoints] == [2, 4] and two.live is False
    run_score(str(world / "probe.jsonl"), str(world / "reference"), run_dir=str(tmp_path / "out2"),
              workspace=tmp_path / "scored", name="r", numerics="exact")
    assert _max_diff(_by_step(tmp_path / "ws2", "live"), _by_step(tmp_path / "scored", "r")) <= 1e-5
    assert _max_diff(_by_step(tmp_path / "ws2", "live"), _by_step(tmp_path / "ws1", "live")) <= 1e-4


def _half_written(ws: Path, step: int) -> bool:
    """Whether some score of live step `step` has a chunk on disk while run.json does not list the step."""
    for meta in (ws / "scores").glob("*/meta.json"):
        try:
            m = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if (m.get("live") or {}).get("step") == step and m.get("chunks_done"):
            listed = json.loads((ws / "runs" / "live" / "run.json").read_text())["checkpoints"]
            return all(c["step"] != step for c in listed)
    return False


@pytest.mark.slow
def test_kill_9_mid_step_then_resume_writes_each_step_once(world, tmp_path):
    env = _env(DID_CHUNK_SIZE=4)  # 12 probe pairs: 3 chunks a step
    _script(world, tmp_path / "outA", tmp_path / "wsA", "--steps", 8, env=env)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(world), str(tmp_path / "outB"), str(tmp_path / "wsB"),
                             "--steps", "8", "--chunk-delay", "0.5"], cwd=ROOT, env=_env(DID_CHUNK_SIZE=4),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not _half_written(tmp_path / "wsB", 6):
            assert proc.poll() is None and time.time() < deadline, "the run never reached step 6"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # one chunk of step 6 stored, two to go
    finally:
        proc.kill()
        proc.wait()
    killed = Workspace(tmp_path / "wsB").run("live")
    assert [c.step for c in killed.checkpoints] == [2, 4] and killed.live is True
    assert killed.writer_gone and killed.live_info["pid"] == proc.pid  # the dashboard says it stopped
    assert not (tmp_path / "outB" / "checkpoint-6").exists()
    _script(world, tmp_path / "outB", tmp_path / "wsB", "--steps", 8, "--resume", env=env)
    m = Workspace(tmp_path / "wsB").run("live")
    assert [c.step for c in m.checkpoints] == [2, 4, 6, 8] and m.live is False
    assert _max_diff(_by_step(tmp_path / "wsB", "live"), _by_step(tmp_path / "wsA", "live")) <= 1e-5


def test_sharded_training_is_refused_at_train_start(world, tmp_path):
    with pytest.raises(ValueError, match="FSDP or DeepSpeed ZeRO-3"):
        check_unsharded(SimpleNamespace(is_fsdp_enabled=True))
    zero = SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=True, accelerator=SimpleNamespace(
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3))))
    with pytest.raises(ValueError, match="ZeRO-3"):
        check_unsharded(zero)
    zero.accelerator.state.deepspeed_plugin.zero_stage = 2
    check_unsharded(zero)  # ZeRO-1/2 keep whole parameters on every rank
    from transformers import TrainerCallback

    class Sharded(TrainerCallback):  # runs first: the trainer now looks as accelerate makes it under FSDP
        def on_train_begin(self, *args, **kwargs):  # noqa: ANN002, ANN003
            trainer.is_fsdp_enabled = True

    trainer = trainer_for(world, tmp_path / "out", steps=2,
                          callbacks=[Sharded(), DIDCallback(str(world / "probe.jsonl"), tmp_path / "ws")])
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="no rank holds the whole model"):
        trainer.train()
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "ws" / "runs").exists()


def test_bad_arguments_are_refused(world, tmp_path):
    for kw in ({"every": 0}, {"every": "epoch"}, {"numerics": "fast"}, {"name": "../x"}):
        with pytest.raises((ValueError, InputError)):
            DIDCallback("probe.jsonl", tmp_path, **kw)
    run_score(str(world / "probe.jsonl"), str(world / "reference"), policies=[str(world / "reference")],
              workspace=tmp_path, name="scored", numerics="exact")
    trainer = trainer_for(world, tmp_path / "out", steps=2,
                          callbacks=[DIDCallback(str(world / "probe.jsonl"), tmp_path, name="scored")])
    with pytest.raises(InputError, match="not written by DIDCallback"):
        trainer.train()  # a score run is never overwritten


def test_untouched_puts_rng_states_and_train_flags_back():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    model[1].eval()
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    want = torch.rand(3), np.random.rand(), random.random()
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    with untouched(model):
        model.eval()
        torch.rand(5), np.random.rand(4), random.random()
    assert model.training and model[0].training and not model[1].training
    got = torch.rand(3), np.random.rand(), random.random()
    assert torch.equal(got[0], want[0]) and got[1:] == want[1:]


# -- the dashboard -------------------------------------------------------------------------------------
def _live_workspace(root: Path, steps: int) -> Path:
    """A synthetic run `grown` (3 checkpoints) and a live run `live` of its first `steps`, as the callback writes it."""
    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(root, n_pairs=40, n_checkpoints=3, seed=3, run_name="grown")
    _grow(root, steps)
    return root


def _grow(root: Path, steps: int) -> None:
    ws = Workspace(root)
    m = ws.run("grown")
    live_run.write(ws, m.replace(name="live", checkpoints=m.checkpoints[:steps]), live=True)


def test_a_live_run_is_marked_on_its_pages(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    for key, value in {"DID_WORKSPACE": str(_live_workspace(tmp_path, 2)), "DID_AUTO_DEMO": "0",
                       "DID_WARM_UP": "0"}.items():
        monkeypatch.setenv(key, value)
    for page in ("pages/runs.py", "pages/curves.py", "pages/margins.py", "pages/entropy.py", "pages/example.py"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.query_params["run"] = "live"
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert any("Live" in c.value and "step 200 (2 scored)" in c.value for c in at.caption), page
        picker = at.sidebar.selectbox[0]
        assert picker.value == "live" and "live · live" in picker.options and "grown" in picker.options


def test_a_live_run_whose_training_process_is_gone_says_it_stopped(monkeypatch, tmp_path):
    """run.json still says live (a kill -9 leaves it) but its pid is gone: every page warns that the run
    stopped and at which step, the picker labels it `stopped`, and nothing polls for new steps."""
    from streamlit.testing.v1 import AppTest

    root = _live_workspace(tmp_path, 2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ws = Workspace(root)
    m = ws.run("live")
    ws.write_run(m.replace(live_info={**(m.live_info or {}), "pid": dead.pid, "host": socket.gethostname()}))
    for key, value in {"DID_WORKSPACE": str(root), "DID_AUTO_DEMO": "0", "DID_WARM_UP": "0"}.items():
        monkeypatch.setenv(key, value)
    for page in ("pages/runs.py", "pages/curves.py", "pages/example.py"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.query_params["run"] = "live"
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        warned = [w.value for w in at.warning if "Stopped" in w.value]
        assert warned and "at step 200 (2 scored)" in warned[0] and str(dead.pid) in warned[0], page
        assert not any("Live" in c.value for c in at.caption), page
        assert "live · stopped" in at.sidebar.selectbox[0].options


@pytest.mark.browser
@pytest.mark.slow
def test_training_curves_shows_a_new_step_without_a_reload(tmp_path):
    from test_browser import CHROMIUM, CHROMIUM_ARGS, _settle

    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not found at {CHROMIUM}")
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright
    from streamlit_server import serve

    _live_workspace(tmp_path, 2)
    last_step = ("() => Math.max(...[...document.querySelectorAll('.js-plotly-plot')].flatMap(g => (g.data || [])"
                 ".flatMap(t => [...(t.x || [])].filter(x => typeof x === 'number'))))")
    with serve(tmp_path, env={"DID_LIVE_POLL_S": "0.5", "DID_WARM_UP": "0"}) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{url}/curves?run=live")
        _settle(page, "Training curves")
        page.wait_for_function(f"() => ({last_step})() === 200")  # the charts mount after the script run
        page.evaluate("window.__did_no_reload = 1")
        _grow(tmp_path, 3)  # the trainer scored step 300
        page.wait_for_function(f"() => ({last_step})() === 300", timeout=30_000)
        page.get_by_text("step 300 (3 scored)", exact=False).first.wait_for()
        assert page.evaluate("window.__did_no_reload") == 1  # the same document: no reload
        browser.close()
