"""The load benchmark's CPU accounting (bench/load_test.py: watch_cpu): a process that burns a known
amount of CPU is counted in the group its command line names."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
load_test = pytest.importorskip("load_test")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.slow
def test_watch_cpu_counts_a_burning_process_in_its_group(monkeypatch):
    word = f"did-cpu-probe-{uuid.uuid4().hex}"  # no other process on the machine has it in its command line
    monkeypatch.setattr(load_test, "CPU_GROUPS", (("probe", (word,)),))
    totals: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=load_test.watch_cpu, args=(stop, totals))
    watcher.start()
    # Burns 1 s of CPU, then idles past the next sample (watch_cpu misses what a process does in its
    # last 0.5 s before it ends, as its docstring says).
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\ntime.sleep(0.8)"
    subprocess.run([sys.executable, "-c", burn, word], check=True)
    stop.set()
    watcher.join()
    assert 0.9 <= totals.get("probe", 0.0) <= 1.3, totals  # 1 s of burning plus the interpreter's start


def test_opens_during_another_browser_s_start_up_are_grouped_apart():
    """by_phase: an open that overlaps another session's app load is "start-up"; one that overlaps
    only its own session's app load, or none, keeps its round; app loads are not counted."""
    log = [
        (0.0, 0, ("first visit", "full"), 4.0),
        (3.0, 1, ("app load", "full"), 4.0),      # session 1 boots from 3 to 7 s
        (5.0, 0, ("curves", "click", True), 0.5),  # overlaps session 1's boot
        (6.9, 0, ("lab", "full", True), 0.2),      # overlaps it by 0.1 s
        (7.5, 0, ("lab", "click", True), 1.0),     # after it
        (6.0, 1, ("runs", "click", True), 0.3),    # its own boot only (cannot happen, still its round)
        (20.0, 1, ("margins", "drill", False), 2.5),
    ]
    groups = load_test.by_phase(log)
    assert groups == {("click", "start-up"): [0.5], ("full", "start-up"): [0.2], ("click", "first round"): [1.0, 0.3],
                      ("drill", "later"): [2.5]}


def test_the_peers_agree_with_a_float64_computation():
    """bench/peers.py: both peers' per-sequence sums equal a float64 forward's, on a tiny model."""
    import random

    import torch
    from peers import head_at_labels, naive_loop

    from did_core.tiny import tiny_llama
    from did_core.tokenization import TokenizedPair

    model = tiny_llama(97, seed=3)
    rng = random.Random(1)
    pairs = [TokenizedPair(f"p{i}", tuple(rng.randrange(97) for _ in range(rng.randint(1, 9))),
                           tuple(rng.randrange(97) for _ in range(rng.randint(1, 7))),
                           tuple(rng.randrange(97) for _ in range(rng.randint(0, 7))), 0, 0) for i in range(9)]
    m64 = tiny_llama(97, seed=3).double()
    want = []
    with torch.inference_mode():
        for p in pairs:
            row = []
            for r in (p.chosen_ids, p.rejected_ids):
                if not r:
                    row.append(0.0)
                    continue
                lp = torch.log_softmax(m64(input_ids=torch.tensor([list(p.prompt_ids) + list(r)])).logits[0], -1)
                row.append(sum(float(lp[len(p.prompt_ids) - 1 + j, t]) for j, t in enumerate(r)))
            want.append(tuple(row))
    for got in (naive_loop([model], pairs)[0], head_at_labels([model], pairs, budget=24)[0]):
        assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w)) < 1e-4


GPU_CHECK = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
GPU_CHECK_STEPS = ("1. parity", "2. bf16 log-ratio error", "3. throughput, float32 engine", "4. throughput, bf16 engine",
                   "5. roofline")


@pytest.mark.slow
def test_gpu_check_runs_every_step_in_its_cpu_dry_mode(tmp_path):
    """bench/gpu_check.py --dry-run: every step on CPU with a tiny model (so the GPU script cannot rot),
    run from another working directory."""
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(GPU_CHECK), "--dry-run", "--json", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for step in GPU_CHECK_STEPS:
        assert sum(line.startswith(step) for line in lines) == 1, (step, proc.stdout)
    parity = next(line for line in lines if line.startswith("1. parity"))
    assert parity.endswith(": OK"), parity
    assert "float32 CPU matmul" in next(line for line in lines if line.startswith("5. roofline"))
    figures = json.loads(out.read_text())
    assert figures["parity_ok"] and figures["dry_run"] and figures["parity_token_max"] < 1e-3


def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: gpu_check runs for real there")
    proc = subprocess.run([sys.executable, str(GPU_CHECK)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: no CUDA device"), proc.stderr


@pytest.mark.slow
def test_memory_bench_dry_run_prints_both_peaks_and_their_ratio(tmp_path):
    """bench/memory_bench.py --dry-run: a 1M-parameter TRL-style run scored with 1 and 3 checkpoints, each
    in a process of its own (a smoke test: the weights are too small here for the ratio to mean much)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "memory_bench.py"
    proc = subprocess.run([sys.executable, str(script), "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("peak RSS, 1 checkpoint: ") for line in lines), proc.stdout
    assert any(line.startswith("peak RSS, 3 checkpoints: ") for line in lines), proc.stdout
    assert any(line.startswith("ratio 3 vs 1: ") and "target <= 1.2x" in line for line in lines), proc.stdout


def test_score_bench_s_trl_evaluate_runs_trl_and_matches_the_peers(tmp_path):
    """bench/score_bench.py's TRL column: TRL's own DPOTrainer.evaluate() runs on a tiny model (so the
    benchmark cannot rot against TRL's API) and its logged mean log-probs equal the naive loop's."""
    import json

    import pandas as pd
    import score_bench
    from peers import naive_loop

    from did_core.data import load_preference_data
    from did_core.tiny import build_tokenizer, tiny_llama
    from did_core.tokenization import tokenize_pairs

    tok = build_tokenizer()
    ref, pol = tiny_llama(len(tok), seed=0), tiny_llama(len(tok), seed=1)
    rows = [{"prompt": f"ab{'c' * i} ", "chosen": f"de{'a' * i}", "rejected": f"b{'d' * (i + 1)}"} for i in range(4)]
    (tmp_path / "p.jsonl").write_text("\n".join(map(json.dumps, rows)))
    text = pd.DataFrame(rows)
    _, metrics = score_bench.trl_evaluate(ref, pol, tok, text, batch=2)
    pairs = tokenize_pairs(load_preference_data(str(tmp_path / "p.jsonl")), tok, score_bench.MAX_LENGTH)
    want = score_bench.mean_logps(naive_loop([ref, pol], pairs)[1])
    assert abs(metrics["eval_logps/chosen"] - want[0]) < 1e-3 and abs(metrics["eval_logps/rejected"] - want[1]) < 1e-3


# -- the dashboard benchmark's workspace (did_core/synthetic_ws.py) and its report (bench/dashboard_bench.py)

def test_the_uniform_synthetic_workspace_is_what_it_always_was(tmp_path):
    """The default draws (every test's workspace) are those the builder made before it could stream
    chunk by chunk: these sums and fingerprints were taken from that builder."""
    from did_core.synthetic_ws import make_synthetic_workspace
    from did_core.workspace import Workspace

    make_synthetic_workspace(tmp_path, n_pairs=45, n_checkpoints=3, seed=3, chunk_size=16)
    ws = Workspace(tmp_path)
    p, t = ws.pairs("synthetic"), ws.tokens("synthetic", "checkpoint-300")
    assert [float(p[c].sum()) for c in ("logp_chosen", "logp_rejected", "did_entropy_chosen", "top1_prob_chosen", "ches")
            ] == pytest.approx([-3241.1388277336955, -3278.9481996297836, 234.6888987587887, 74.07054761651567,
                                -2714.042664374044], rel=1e-12)
    assert len(t) == 1053 and int(t["token_id"].sum()) == 49278
    assert float(t["logp"].astype("float64").sum()) == pytest.approx(-2214.729021720588, rel=1e-9)
    assert ws.dataset("synthetic")["chosen"].iloc[7] == " is because because this the because kind short kind this model because prefers clear"
    m = json.loads((tmp_path / "runs" / "synthetic" / "run.json").read_text())
    assert (m["dataset"]["fingerprint"], m["checkpoints"][-1]["score"]) == ("0f1c7995a8ac6ce54f1d", "a2df989ef4bff8ed3d08")


def test_the_lognormal_synthetic_workspace_has_realistic_lengths_and_consistent_rows(tmp_path):
    """lengths="lognormal": response lengths around the mean, capped; token rows in the scorer's order
    (each pair's chosen rows, then its rejected ones) summing to the pair rows, the dataset's text their
    pieces; only the last `token_models` checkpoints (and the reference) with token rows; the same
    workspace again from the same seed."""
    import numpy as np
    import pyarrow.parquet as pq

    from did_core.synthetic_ws import make_synthetic_workspace
    from did_core.workspace import Workspace

    kw = dict(n_pairs=300, n_checkpoints=3, seed=2, chunk_size=64, lengths="lognormal", mean_tokens=80,
              max_tokens=300, token_models=1)
    make_synthetic_workspace(tmp_path / "a", **kw)
    make_synthetic_workspace(tmp_path / "b", **kw)
    ws = Workspace(tmp_path / "a")
    p = ws.pairs("synthetic")
    n = np.concatenate([p["n_tokens_chosen"].to_numpy(), p["n_tokens_rejected"].to_numpy()])
    assert 65 < n.mean() < 95 and n.min() >= 1 and n.max() <= 300 and np.median(n) < n.mean()
    t = ws.tokens("synthetic", "checkpoint-300")
    last = p[p["model"] == "checkpoint-300"].set_index("pair_id")
    sums = t.groupby(["pair_id", "side"])["logp"].sum().unstack()
    assert np.allclose(sums.loc[last.index, "chosen"], last["logp_chosen"], atol=1e-3)
    assert np.allclose(t["ref_logp"].isna().sum(), 0) and t["token_id"].nunique() > 1000
    text = ws.dataset("synthetic").set_index("pair_id")["rejected"]
    assert "".join(t[(t["pair_id"] == "17") & (t["side"] == "rejected")].sort_values("position")["token"]) == text["17"]
    m = json.loads((tmp_path / "a" / "runs" / "synthetic" / "run.json").read_text())
    first = pq.read_table(ws.open_store(m["checkpoints"][-1]["score"]).chunk_path(0, "tokens")).to_pandas()
    runs = (first["pair_id"] + first["side"]).ne((first["pair_id"] + first["side"]).shift()).sum()
    assert runs == 2 * 64  # one run of rows per (pair, side): the pair's chosen rows, then its rejected
    assert ws.tokens("synthetic", "checkpoint-100").empty
    files = sorted(f.relative_to(tmp_path / "a") for f in (tmp_path / "a").rglob("*.parquet"))
    assert files == sorted(f.relative_to(tmp_path / "b") for f in (tmp_path / "b").rglob("*.parquet"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_dashboard_bench_reports_bytes_per_token_and_the_token_file_layout(tmp_path):
    """bench/dashboard_bench.py's storage report: bytes on disk per scored token by kind of file, and
    one token file's columns with their types, encodings and compressed bytes per row."""
    import dashboard_bench

    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(tmp_path, n_pairs=40, n_checkpoints=2, seed=0, lengths="lognormal", mean_tokens=30)
    lines = dashboard_bench.storage_report(tmp_path)
    text = "\n".join(lines)
    assert "scored token rows in 3 files" in text and "B/token" in text
    assert any(line.split()[0] == "token" and "files" in line for line in lines)
    for column in ("pair_id", "token_id", "logp", "token_entropy"):
        assert any(line.split()[:1] == [column] and "ZSTD" in line for line in lines), text
    rss, peak = dashboard_bench.rss_mb()
    assert rss > 0 and peak >= rss or rss != rss  # NaN off Linux


def test_token_rows_take_less_on_disk_than_their_float32_values(tmp_path):
    """The four float32 score columns of a token row would take 16 B uncompressed; a whole token file
    (ids, pieces, positions and the floats, which are random here, so compress no better than real
    ones) stays under that, and the workspace too (pair rows, dataset): column_encodings + pieces_once."""
    import dashboard_bench

    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(tmp_path, n_pairs=1000, n_checkpoints=1, seed=0, lengths="lognormal", mean_tokens=250)
    lines = dashboard_bench.storage_report(tmp_path)
    per_token = {line.split()[0]: float(line.split()[-2 if "float32" not in line else 3]) for line in lines
                 if "B/token" in line and line.startswith("  ") and line.split()[0] in ("token", "all")}
    assert per_token["token"] < 16 and per_token["all"] < 16, "\n".join(lines)


@pytest.mark.slow
def test_dashboard_bench_runs_with_realistic_lengths_and_profiles(tmp_path):
    """The benchmark end to end on a tiny workspace with realistic lengths: the page table with CPU
    times, the inspector on another pair, resident memory, and a profile of the script's thread."""
    script = Path(__file__).resolve().parents[1] / "bench" / "dashboard_bench.py"
    proc = subprocess.run([sys.executable, str(script), "--pairs", "30", "--checkpoints", "2", "--tokens-mean", "20",
                           "--repeats", "1", "--pages", "runs,example", "--profile", "example-new",
                           "--workspace", str(tmp_path / "ws")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "~20 tokens a response" in out and "cold CPU" in out and "B/token" in out
    assert any(line.startswith("example, another pair (run tables warm)") for line in out.splitlines()), out
    assert "RSS" in out and "pages/example.py" in out  # the profile saw the page's own code
