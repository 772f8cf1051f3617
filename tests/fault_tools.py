"""Shared by tests/test_faults.py and bench/fault_campaign.py: run the `score` CLI as a real process,
kill it with SIGKILL at a chosen moment of its scoring stage, and compare final results.

A kill moment is measured from the first `score` progress record (the job has loaded its models and
is about to compute chunk 0), not from process start: Python and torch imports take seconds and a
kill during them tests nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from did_core.export import pairs_table, tokens_table
from did_core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def cli_env(**extra) -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                        "TOKENIZERS_PARALLELISM": "false"}
    return env | {k: str(v) for k, v in extra.items()}


def score_argv(world: dict, ws: Path, name: str = "t", *extra: str) -> list[str]:
    return [sys.executable, "-m", "did_core", "score", "--data", str(world["data"]), "--ref", str(world["ref"]),
            "--run", str(world["run"]), "--workspace", str(ws), "--name", name, *extra]


def run_cli(argv: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, cwd=ROOT, env=env or cli_env(), capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def chunks_computed(stdout: str) -> int:
    """From the CLI's summary line `run t: N pairs, C/T chunks computed ...`."""
    return int(stdout.split("pairs, ")[1].split("/")[0])


def score_stage_started(progress: Path) -> bool:
    if not progress.exists():
        return False
    return any(json.loads(x).get("stage") == "score" for x in progress.read_text().splitlines() if x.strip())


def kill_during_scoring(argv: list[str], env: dict[str, str], progress: Path, delay: float,
                        timeout: float = 300.0) -> dict:
    """Start `argv` (with --progress-json `progress`), SIGKILL it `delay` s into its scoring stage.

    Returns {"killed": bool (False when the job finished first), "kill_s": seconds after scoring began}.
    """
    proc = subprocess.Popen([*argv, "--progress-json", str(progress)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not score_stage_started(progress):
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"the job ended (rc {proc.returncode}) before it started scoring")
            time.sleep(0.02)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < delay and proc.poll() is None:
            time.sleep(0.005)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        return {"killed": killed, "kill_s": time.perf_counter() - t0}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stored_chunks(ws: Path) -> dict[str, int]:
    """Chunks recorded as done (and verified) per score directory."""
    from did_core.store import ScoreStore

    out = {}
    for d in sorted((ws / "scores").glob("*")) if (ws / "scores").is_dir() else []:
        store = ScoreStore(d)
        if store.exists():
            out[d.name] = len(store.done_chunks())
    return out


def results(ws: Path, run: str = "t") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The final export tables (pairs and tokens) of a run, sorted so that order never matters."""
    w = Workspace(ws)
    pairs = pairs_table(w, run).sort_values(["model", "pair_id"], kind="stable").reset_index(drop=True)
    tokens = tokens_table(w, run).sort_values(["model", "pair_id", "side", "position"], kind="stable")
    return pairs, tokens.reset_index(drop=True)


def identical(a: tuple[pd.DataFrame, pd.DataFrame], b: tuple[pd.DataFrame, pd.DataFrame]) -> bool:
    try:
        for x, y in zip(a, b, strict=True):
            pd.testing.assert_frame_equal(x, y, check_exact=True)
    except AssertionError:
        return False
    return True
