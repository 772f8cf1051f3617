"""End-to-end: `python -m did_core score/export` on a tiny on-disk world.

Checks the exported numbers against a naive float64 loop, resume after `kill -9` (counting chunks,
not timing), that a finished job computes nothing, and that two torchrun ranks equal one process.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_world import build_world
from transformers import AutoModelForCausalLM, AutoTokenizer

from did_core.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def _env(**extra) -> dict:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return env | {k: str(v) for k, v in extra.items()}


def _cli(*args, env=None, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "did_core", *map(str, args)], cwd=ROOT, env=env or _env(),
                       capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def _score_args(world, ws, *extra, run_flag="--run"):
    return ["score", "--data", world["data"], "--ref", world["ref"], run_flag, world["run"],
            "--workspace", ws, "--name", "t", *extra]


def _naive_logp(model, prompt_ids, completion_ids) -> float:
    """One forward over prompt+completion, full float64 log-softmax, summed over the completion."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    n = len(prompt_ids)
    return sum(float(logp[n + t - 1, tok]) for t, tok in enumerate(completion_ids))


def test_score_export_matches_naive_loop(world, tmp_path):
    ws = tmp_path / "ws"
    p = _cli(*_score_args(world, ws, "--limit", "12"))
    assert "run t: 12 pairs" in p.stdout
    out = tmp_path / "pairs.csv"
    _cli("export", "--workspace", ws, "--out", out, "--kind", "pairs")
    df = pd.read_csv(out)
    required = ("pair_id model step logp_chosen logp_rejected ref_logp_chosen ref_logp_rejected n_tokens_chosen "
                "n_tokens_rejected reward_chosen reward_rejected reward_margin log_margin ref_log_margin dpo_loss "
                "did_entropy_chosen did_entropy_rejected").split()
    assert list(df.columns[: len(required)]) == required
    assert len(df) == 12 * len(world["steps"])
    assert sorted(df["step"].unique()) == list(world["steps"])
    assert df["did_entropy_chosen"].notna().all()

    from did_core.data import load_preference_data
    from did_core.tokenization import tokenize_pairs

    tok = AutoTokenizer.from_pretrained(world["ref"])
    pairs = tokenize_pairs(load_preference_data(str(world["data"]), limit=12), tok, 1024)
    ref = AutoModelForCausalLM.from_pretrained(world["ref"]).eval()
    beta = 0.1  # no beta recorded by this fake trainer, so the default
    for step in world["steps"]:
        pol = AutoModelForCausalLM.from_pretrained(world["run"] / f"checkpoint-{step}").eval()
        for p in pairs[:5]:
            row = df[(df["step"] == step) & (df["pair_id"].astype(str) == p.pair_id)].iloc[0]
            lc, lr = _naive_logp(pol, p.prompt_ids, p.chosen_ids), _naive_logp(pol, p.prompt_ids, p.rejected_ids)
            rc, rr = _naive_logp(ref, p.prompt_ids, p.chosen_ids), _naive_logp(ref, p.prompt_ids, p.rejected_ids)
            assert abs(row.logp_chosen - lc) < 1e-4 and abs(row.logp_rejected - lr) < 1e-4
            assert abs(row.ref_logp_chosen - rc) < 1e-4 and abs(row.ref_logp_rejected - rr) < 1e-4
            margin = beta * ((lc - rc) - (lr - rr))
            assert abs(row.reward_margin - margin) < 1e-4
            assert abs(row.dpo_loss - math.log1p(math.exp(-margin))) < 1e-4
            assert row.n_tokens_chosen == len(p.chosen_ids)


def test_finished_job_computes_nothing(world, tmp_path):
    ws = tmp_path / "ws"
    args = _score_args(world, ws, "--limit", "10", "--no-token-level")
    assert main([str(a) for a in args]) == 0
    before = {f: f.stat().st_mtime_ns for f in ws.rglob("*.parquet")}
    p = _cli(*args)
    assert " 0/" in p.stdout and "chunks computed" in p.stdout
    assert {f: f.stat().st_mtime_ns for f in ws.rglob("*.parquet")} == before


def test_kill_9_then_resume_is_identical(world, tmp_path):
    from did_core.workspace import Workspace

    ws_ref, ws = tmp_path / "uninterrupted", tmp_path / "killed"
    env = _env(DID_CHUNK_SIZE=4)
    _cli(*_score_args(world, ws_ref), env=_env(DID_CHUNK_SIZE=4))
    prog = tmp_path / "progress.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "did_core", *map(str, _score_args(world, ws)),
                             "--progress-json", str(prog), "--chunk-delay", "0.25"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    done = 0
    # Progress counts pair passes (a pair under one model): the reference and checkpoint-2 are
    # scored together first (2 x 40), then checkpoint-4; 96 is checkpoint-4's 16th pair.
    while time.time() < deadline and done < 96:
        time.sleep(0.1)
        if prog.exists():
            recs = [json.loads(x) for x in prog.read_text().splitlines() if x.strip()]
            done = max([r["done"] for r in recs if r.get("stage") == "score"] or [0])
    # Progress for pairs 12..15 (chunk 3) is reported only after chunks 0..2 were written.
    assert done >= 96, "the job never got going"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_chunks = 10  # 40 pairs / 4
    p = _cli(*_score_args(world, ws), env=_env(DID_CHUNK_SIZE=4))
    computed = int(p.stdout.split("pairs, ")[1].split("/")[0])
    assert 0 < computed <= n_chunks - 3, p.stdout  # at least 3 chunks survived the kill
    # read in this process: a third CLI run computing nothing is test_finished_job_computes_nothing, the
    # export command is tested on its own (each process start here costs seconds of imports)
    (name,) = Workspace(ws_ref).run_names()
    assert Workspace(ws).run_names() == [name]
    pd.testing.assert_frame_equal(Workspace(ws_ref).pairs(name), Workspace(ws).pairs(name))


@pytest.mark.slow
def test_two_torchrun_ranks_equal_one_process(world, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    env = _env(DID_CHUNK_SIZE=8)
    _cli(*_score_args(world, one, "--limit", "24"), env=env)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
           "-m", "did_core", *map(str, _score_args(world, two, "--limit", "24", run_flag="--run-dir"))]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    for kind in ("pairs", "tokens"):
        a, b = tmp_path / f"1{kind}.parquet", tmp_path / f"2{kind}.parquet"
        _cli("export", "--workspace", one, "--out", a, "--kind", kind)
        _cli("export", "--workspace", two, "--out", b, "--kind", kind)
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))


def test_bfloat16_run_reports_its_error_against_float32(world, tmp_path):
    from did_core.config import ScoreSettings
    from did_core.export import pairs_table
    from did_core.score import run_score
    from did_core.workspace import Workspace

    common = dict(run_dir=str(world["run"]), name="t")
    bf = run_score(str(world["data"]), str(world["ref"]), workspace=tmp_path / "bf", dtype_check_pairs=6,
                   settings=ScoreSettings(dtype="bfloat16", token_level=False, limit=6), **common)
    run_score(str(world["data"]), str(world["ref"]), workspace=tmp_path / "fp",
              settings=ScoreSettings(token_level=False, limit=6), **common)
    a, b = pairs_table(Workspace(tmp_path / "bf")), pairs_table(Workspace(tmp_path / "fp"))
    first = a["model"] == a["model"].iloc[0]
    a, b = a[first].reset_index(drop=True), b[first].reset_index(drop=True)
    logp_err = max((a[c] - b[c]).abs().max() for c in ("logp_chosen", "logp_rejected", "ref_logp_chosen",
                                                           "ref_logp_rejected"))
    ratio_err = max(((a[f"logp_{s}"] - a[f"ref_logp_{s}"]) - (b[f"logp_{s}"] - b[f"ref_logp_{s}"])).abs().max()
                    for s in ("chosen", "rejected"))
    c = bf.dtype_check
    assert c["dtype"] == "bfloat16" and c["pairs"] == 6
    assert 0 < c["max_abs_logp_error"] and abs(c["max_abs_logp_error"] - logp_err) < 1e-9
    assert abs(c["max_abs_log_ratio_error"] - ratio_err) < 1e-9


def test_pi_l_model_is_scored_and_recorded_for_the_power_law_fit(world, tmp_path):
    from did_core.losses import pair_table
    from did_core.paper import paper_conditions
    from did_core.workspace import Workspace

    pi_l = str(world["run"] / "checkpoint-2")
    main(["score", "--data", str(world["data"]), "--ref", str(world["ref"]), "--policy",
          str(world["run"] / "checkpoint-4"), "--pi-l", pi_l, "--workspace", str(tmp_path), "--name", "p",
          "--limit", "8", "--no-token-level"])
    ws = Workspace(tmp_path)
    assert ws.run("p").extra["pi_l"] == pi_l
    pairs = pair_table(ws.pairs("p"), ws.run_settings(ws.run("p")).settings)
    assert set(pairs["model"]) == {pi_l, str(world["run"] / "checkpoint-4")}
    fit, table = paper_conditions(pairs, str(world["run"] / "checkpoint-4"), pi_l)
    wide = pairs.pivot(index="pair_id", columns="model", values="log_margin")
    m_ref = pairs.groupby("pair_id")["ref_log_margin"].first()
    x = wide[str(world["run"] / "checkpoint-4")] - m_ref
    y = m_ref - wide[pi_l]
    assert abs(fit.beta_hat - float((x * y).sum() / (x * x).sum())) < 1e-9


FORMATS = {
    "standard explicit": {"prompt": "the ab", "chosen": "c the", "rejected": " dab"},
    "standard implicit": {"chosen": "the ab c the", "rejected": "the ab dab"},
    "conversational explicit": {
        "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the ab?"}],
        "chosen": [{"role": "assistant", "content": "c the"}],
        "rejected": [{"role": "assistant", "content": "dab."}]},
    "conversational implicit": {
        "chosen": [{"role": "user", "content": "the ab?"}, {"role": "assistant", "content": "c the"}],
        "rejected": [{"role": "user", "content": "the ab?"}, {"role": "assistant", "content": "dab."}]},
    "hh transcript": {"chosen": "\n\nHuman: the ab?\n\nAssistant: c the",
                      "rejected": "\n\nHuman: the ab?\n\nAssistant: dab."},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_end_to_end_equals_naive_loop(world, tmp_path, fmt):
    """Each format through the whole job (load, TRL tokenization, engine, store, export) against a naive
    loop over TRL's own token ids for that record (a prompt ending in "a" merges with "b" in "ab")."""
    from did_core.config import ScoreSettings
    from did_core.data import load_preference_data
    from did_core.export import pairs_table
    from did_core.score import run_score
    from did_core.tokenization import tokenize_pairs
    from did_core.workspace import Workspace

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(FORMATS[fmt]) for _ in range(3)) + "\n")
    run_score(str(data), str(world["ref"]), policies=[str(world["run"] / "checkpoint-4")], workspace=tmp_path,
              name="f", settings=ScoreSettings(token_level=False, token_budget=16))
    row = pairs_table(Workspace(tmp_path)).iloc[0]
    tok = AutoTokenizer.from_pretrained(world["ref"])
    (p, *_) = tokenize_pairs(load_preference_data(str(data)), tok, 1024)
    assert len(p.chosen_ids) > 0 and len(p.rejected_ids) > 0
    pol = AutoModelForCausalLM.from_pretrained(world["run"] / "checkpoint-4").eval()
    ref = AutoModelForCausalLM.from_pretrained(world["ref"]).eval()
    assert abs(row.logp_chosen - _naive_logp(pol, p.prompt_ids, p.chosen_ids)) < 1e-4
    assert abs(row.logp_rejected - _naive_logp(pol, p.prompt_ids, p.rejected_ids)) < 1e-4
    assert abs(row.ref_logp_chosen - _naive_logp(ref, p.prompt_ids, p.chosen_ids)) < 1e-4
