"""Faults (issue 6, part 2): `kill -9` at random moments, readers racing a writer, a corrupted chunk,
model files that change after scoring, and a full disk. Nothing is lost, nothing is mixed, and the
final results equal an uninterrupted run's, exactly.

bench/fault_campaign.py runs the kill test at ten random moments and prints a table.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_world import build_world
from fault_tools import (
    chunks_computed,
    cli_env,
    identical,
    kill_during_scoring,
    results,
    score_argv,
    stored_chunks,
)

from did_core.__main__ import main
from did_core.store import CorruptStoreError, ScoreStore
from did_core.tiny import tiny_llama
from did_core.workspace import Workspace

N_PAIRS, CHUNK = 48, 4  # 12 chunks per score


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("faultworld"), n_pairs=N_PAIRS)


def _main(world, ws: Path, name: str = "t") -> int:
    """`python -m did_core score` in this process (no second torch import), chunks of CHUNK pairs."""
    os.environ["DID_CHUNK_SIZE"] = str(CHUNK)
    try:
        return main([str(a) for a in score_argv(world, ws, name)[3:]])
    finally:
        del os.environ["DID_CHUNK_SIZE"]


def _score_in_process(world, ws: Path, capsys, name: str = "t") -> str:
    """A (re)run in this process; returns its stdout (the summary line)."""
    assert _main(world, ws, name) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def baseline(world, tmp_path_factory):
    """An uninterrupted run: the results every faulted run must equal."""
    ws = tmp_path_factory.mktemp("baseline") / "ws"
    assert _main(world, ws) == 0
    return {"ws": ws, "results": results(ws)}


def test_kill_9_at_random_moments_then_rerun_is_identical(world, baseline, tmp_path, capsys):
    """Three seeded kill moments inside the scoring stage (the job is slowed to ~0.1 s a chunk so
    they spread over it); each rerun recomputes only what was lost and ends identical. While the
    jobs write, a reader parses every stored file over and over and never sees a half-written one."""
    rng = random.Random(6)
    env = cli_env(DID_CHUNK_SIZE=CHUNK)
    n_chunks = N_PAIRS // CHUNK
    delays = [rng.uniform(0.0, 1.2) for _ in range(3)]
    kills: dict[int, dict] = {}

    def job(k: int) -> None:  # the three jobs run side by side: their imports dominate the time
        kills[k] = kill_during_scoring(score_argv(world, tmp_path / f"ws{k}", "t", "--chunk-delay", "0.1"), env, tmp_path / f"progress{k}.jsonl",
                                       delays[k])

    threads = [threading.Thread(target=job, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    # Meanwhile, a reader: never a half-written file (every write is temp file + rename).
    reads, errors = {"parquet": 0, "json": 0, "store": 0}, []
    while any(t.is_alive() for t in threads):
        _read_everything([tmp_path / f"ws{k}" for k in range(3)], reads, errors)
        time.sleep(0.01)  # leave the writers a core
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert reads["parquet"] > 10 and reads["store"] > 3, reads
    survived = []
    for k in range(3):
        ws, kill = tmp_path / f"ws{k}", kills[k]
        assert kill["killed"], "the job finished before the kill; slow it down"
        kept = stored_chunks(ws)  # per score directory: chunks verified on disk
        ref_kept = min(kept.values()) if kept else 0
        out = _score_in_process(world, ws, capsys)
        assert chunks_computed(out) == n_chunks - ref_kept, (kept, out)
        assert not list(ws.rglob(".*.tmp")), "the rerun left the killed job's temp files"
        assert identical(results(ws), baseline["results"]), f"kill at {kill['kill_s']:.2f} s"
        survived.append(max(kept.values(), default=0))  # (checkpoint-major: the stores fill one turn after another)
    assert " 0/" in _score_in_process(world, tmp_path / "ws0", capsys)  # finished: nothing recomputed
    assert max(survived) > 0, survived  # at least one kill landed after some chunks were stored


def test_a_job_removes_the_temp_files_of_killed_writers_only(world, tmp_path, capsys):
    """Workspace.remove_orphaned_temps (a score or sample job calls it first): temp files whose writer
    pid is gone are removed, everywhere a writer writes; a live writer's temp file and every other
    file (results, the lock) stay. (tests/test_sample_job.py checks that sampling calls it.)"""
    gone = subprocess.Popen(["true"])
    gone.wait()
    ws = Workspace(tmp_path / "ws")
    dirs = [ws.root / "datasets", ws.root / "samples", ws.root / "runs" / "r", ws.root / "scores" / ("a" * 16)]
    dead, live, kept = [], [], []
    for d in dirs:
        d.mkdir(parents=True)
        dead.append(d / f".chunk-00003.pairs.parquet.{gone.pid}.0a1b2c3d.tmp")
        live.append(d / f".meta.json.{os.getpid()}.4e5f6a7b.tmp")
        kept += [d / "chunk-00003.pairs.parquet", d / ".lock", d / "notes.tmp", d / f".x.{gone.pid}.tmp"]
    for f in dead + live + kept:
        f.write_bytes(b"x")
    assert sorted(ws.remove_orphaned_temps()) == sorted(dead)
    assert not any(f.exists() for f in dead) and all(f.exists() for f in live + kept)
    assert ws.remove_orphaned_temps() == []
    assert Workspace(tmp_path / "empty").remove_orphaned_temps() == []
    for f in dead:
        f.write_bytes(b"x")
    _score_in_process(world, ws.root, capsys)  # a scoring job sweeps before it writes
    assert not any(f.exists() for f in dead) and all(f.exists() for f in live + kept)


def _read_everything(workspaces: list[Path], reads: dict[str, int], errors: list[str]) -> None:
    """One pass over every stored file of `workspaces`, as a reader (the dashboard) would read them."""
    for ws in workspaces:
        for path in list(ws.rglob("*")) if ws.exists() else []:
            if path.name.startswith(".") or not path.is_file():
                continue  # temp files (.name.pid.tmp) and the lock are not results
            try:
                if path.suffix == ".parquet":
                    pq.read_table(path)
                    reads["parquet"] += 1
                elif path.suffix == ".json":
                    json.loads(path.read_text())
                    reads["json"] += 1
            except FileNotFoundError:
                continue  # replaced between listing and opening: fine
            except Exception as e:  # noqa: BLE001 — any parse error is the failure we look for
                errors.append(f"{path.name}: {type(e).__name__}: {e}")
        for d in (ws / "scores").glob("*") if (ws / "scores").is_dir() else []:
            store = ScoreStore(d)
            try:
                if store.exists():
                    store.read_pairs()  # sha256-verified chunk reads, as the dashboard does
                    reads["store"] += 1
            except CorruptStoreError as e:
                errors.append(str(e))


def _flip_bytes(path: Path, at: int, n: int = 8) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(at, min(at + n, len(raw))):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupted_chunk_is_detected_and_recomputed(world, baseline, tmp_path, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(baseline["ws"], ws)
    manifest = Workspace(ws).run("t")
    store = ScoreStore(Workspace(ws).score_dir(manifest.checkpoints[1].score))
    pairs_file, tokens_file = store.chunk_path(2, "pairs"), store.chunk_path(5, "tokens")
    _flip_bytes(pairs_file, pairs_file.stat().st_size // 2)
    _flip_bytes(tokens_file, 4)
    assert store.done_chunks() == set(range(N_PAIRS // CHUNK)) - {2, 5}
    assert not store.is_complete()
    with pytest.raises(CorruptStoreError):
        store.read_tokens()  # a reader is told, never handed wrong numbers
    out = _score_in_process(world, ws, capsys)
    assert chunks_computed(out) == 2, out
    assert store.is_complete() and identical(results(ws), baseline["results"])


def test_corrupted_merged_cache_falls_back_to_the_chunks(world, baseline, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(baseline["ws"], ws)
    store = ScoreStore(Workspace(ws).score_dir(Workspace(ws).run("t").reference.score))
    _flip_bytes(store.dir / "pairs.parquet", 100)
    assert identical(results(ws), baseline["results"])


def _rewrite_weights(model_dir: Path, seed: int) -> None:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir)
    fresh = tiny_llama(m.config.vocab_size, seed=seed)
    fresh.save_pretrained(model_dir)


def test_changed_model_is_stale_and_a_rerun_never_mixes(world, tmp_path, capsys):
    root = tmp_path / "world"
    shutil.copytree(world["ref"].parent, root)
    w = {"data": root / "pairs.jsonl", "ref": root / "reference", "run": root / "run"}
    ws = tmp_path / "ws"
    _score_in_process(w, ws, capsys)
    before = Workspace(ws).run("t")
    assert Workspace(ws).stale_models(before) == {}
    old_pairs = Workspace(ws).pairs("t")
    old_scores = {cp.name: cp.score for cp in before.checkpoints}
    old_files = {p: p.read_bytes() for p in (ws / "scores" / old_scores["checkpoint-4"]).glob("chunk-*")}

    _rewrite_weights(root / "run" / "checkpoint-4", seed=99)  # trained further, saved in place
    stale = Workspace(ws).stale_models(Workspace(ws).run("t"))
    assert stale == {"checkpoint-4": "changed"}
    # The stored numbers are the old model's, marked stale; nothing was recomputed behind our back.
    assert identical((Workspace(ws).pairs("t"),) * 2, (old_pairs,) * 2)

    out = _score_in_process(w, ws, capsys)
    assert chunks_computed(out) == N_PAIRS // CHUNK  # only checkpoint-4, under a new fingerprint
    after = Workspace(ws).run("t")
    assert Workspace(ws).stale_models(after) == {}
    new_scores = {cp.name: cp.score for cp in after.checkpoints}
    assert new_scores["checkpoint-2"] == old_scores["checkpoint-2"]
    assert new_scores["checkpoint-4"] != old_scores["checkpoint-4"]
    assert {p: p.read_bytes() for p in old_files} == old_files  # the old results are untouched
    fresh = tmp_path / "fresh"
    _score_in_process(w, fresh, capsys)  # the changed world scored from scratch
    assert identical(results(ws), results(fresh))

    shutil.rmtree(root / "run" / "checkpoint-2")
    assert Workspace(ws).stale_models(Workspace(ws).run("t")) == {"checkpoint-2": "missing"}


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_gives_one_error_line_and_a_rerun_with_space_works(world, baseline, tmp_path, capsys):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        ws = disk / "ws"
        code = _main(world, ws)
        err = capsys.readouterr().err
        errors = [x for x in err.splitlines() if x.startswith("error:")]
        assert code != 0 and "Traceback" not in err, err[-2000:]
        # One error line, the last thing printed (a progress line may come before it).
        assert len(errors) == 1 and "no space left on device" in errors[0], err
        assert err.strip().splitlines()[-1] == errors[0], err
        assert not list(ws.rglob("*.tmp")), "temp files left behind on a full disk"
        kept = stored_chunks(ws)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        out = _score_in_process(world, ws, capsys)
        assert chunks_computed(out) == N_PAIRS // CHUNK - min(kept.values(), default=0)
        assert identical(results(ws), baseline["results"])
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)

