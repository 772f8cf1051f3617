"""The warm job process (did_ui/standby.py): a job handed to it runs exactly as a fresh
`python -m did_core` would, can be cancelled, is never handed twice, and an idle standby leaves."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_world import build_world

from did_ui import jobs, standby

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), n_pairs=12, steps=(2, 4))


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setenv("DID_STANDBY", "1")


def _wait(predicate, timeout: float = 120.0, step: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _ready(ws: Path) -> list[Path]:
    return sorted((ws / "jobs" / ".standby").glob("*/ready"))


def _score_argv(world, ws: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "did_core", "score", "--data", str(world["data"]), "--ref", str(world["ref"]),
            "--run", str(world["run"]), "--workspace", str(ws), "--name", name]


def _finish(ws: Path, job_id: str, timeout: float = 300.0) -> jobs.JobInfo:
    assert _wait(lambda: jobs.info(ws, job_id).status != "running", timeout), jobs.info(ws, job_id)
    return jobs.info(ws, job_id)


def test_a_job_in_the_standby_equals_a_fresh_process_s(world, tmp_path, on):
    ws = tmp_path / "ws"
    standby.ensure(ws)
    assert _wait(lambda: _ready(ws)), "the standby never became ready"
    standby.ensure(ws)
    assert len(_ready(ws)) == 1  # one waiting standby is enough
    warm = jobs.start(ws, _score_argv(world, ws, "warm"))
    meta = json.loads((ws / "jobs" / warm / "job.json").read_text())
    assert meta["standby"] is True and not (ws / "jobs" / ".standby" / str(meta["pid"]) / "ready").exists()
    info = _finish(ws, warm)
    assert info.status == "done", info.log_tail
    fresh_ws = tmp_path / "fresh"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DID_STANDBY", "0")
        cold = jobs.start(fresh_ws, _score_argv(world, fresh_ws, "warm"))
        assert json.loads((fresh_ws / "jobs" / cold / "job.json").read_text())["standby"] is False
        assert _finish(fresh_ws, cold).status == "done"
    from did_core.workspace import Workspace

    pd.testing.assert_frame_equal(Workspace(ws).pairs("warm"), Workspace(fresh_ws).pairs("warm"))
    log = (ws / "jobs" / warm / "log.txt").read_text()
    assert "run warm: 12 pairs" in log and "Traceback" not in log and "Warning" not in log, log
    records = [json.loads(x) for x in (ws / "jobs" / warm / "progress.jsonl").read_text().splitlines()]
    assert records[-1].get("stage") == "done" and any(r.get("stage") == "score" for r in records)


def test_a_standby_job_can_be_cancelled(world, tmp_path, on, monkeypatch):
    monkeypatch.setenv("DID_CHUNK_SIZE", "1")
    ws = tmp_path / "ws"
    standby.ensure(ws)
    assert _wait(lambda: _ready(ws))
    job = jobs.start(ws, [*_score_argv(world, ws, "c"), "--chunk-delay", "0.5"])  # 36 chunks: ~18 s unless cancelled
    assert json.loads((ws / "jobs" / job / "job.json").read_text())["standby"] is True
    assert _wait(lambda: (jobs.info(ws, job).done or 0) > 0, 120), jobs.info(ws, job)
    jobs.cancel(ws, job)
    info = _finish(ws, job, 60)
    assert info.status == "cancelled", info


def test_a_standby_is_handed_one_job_and_only_a_matching_one(world, tmp_path, on, monkeypatch):
    ws = tmp_path / "ws"
    standby.ensure(ws)
    assert _wait(lambda: _ready(ws))
    d = ws / "jobs" / "x"
    d.mkdir(parents=True)
    env = standby.job_env()
    argv = _score_argv(world, ws, "m")
    assert standby.take(ws, d, ["/bin/echo", "hi"], env) == (None, "not a `python -m did_core` command")
    pid, why = standby.take(ws, d, argv, env | {"DID_CHUNK_SIZE": "3"})  # another environment
    assert pid is None and "environment differs (DID_CHUNK_SIZE)" in why
    (d / "job.json").write_text(json.dumps({"argv": argv}))
    # torch writes its inductor cache folder into the environment of a process that asks for it (the
    # server may have, a fresh standby has not): that alone keeps no job from the standby
    key = "TORCHINDUCTOR_CACHE_DIR"
    one_sided = {k: v for k, v in env.items() if k != key} if key in env else env | {key: "/tmp/torchinductor_x"}
    pid, why = standby.take(ws, d, argv, one_sided)
    assert pid is not None and why == ""
    assert standby.take(ws, d, argv, env) == (None, "no warm process was ready yet")  # claimed: never twice
    assert _wait(lambda: (d / "rc").exists(), 300) and (d / "rc").read_text() == "0"


def test_an_idle_standby_leaves_when_its_workspace_is_gone(tmp_path, on):
    ws = tmp_path / "ws"
    standby.ensure(ws)
    assert _wait(lambda: _ready(ws))
    pid = int(_ready(ws)[0].parent.name)
    import shutil

    shutil.rmtree(ws)
    assert _wait(lambda: not _alive(pid), 30), "the standby outlived its workspace"


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_off_means_no_standby(tmp_path, monkeypatch):
    monkeypatch.setenv("DID_STANDBY", "0")
    standby.ensure(tmp_path)
    assert not (tmp_path / "jobs" / ".standby").exists()
    job_id = jobs.start(tmp_path, [sys.executable, "-c", "pass"])
    assert _wait(lambda: jobs.info(tmp_path, job_id).status == "done")
    assert jobs.info(tmp_path, job_id).cold_start == "the warm process is off (DID_STANDBY=0)"


def test_the_job_panel_says_why_a_job_started_cold(tmp_path, monkeypatch):
    """A job that could not go to the warm process says so, and why, under its progress bar."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DID_STANDBY", "0")
    job_id = jobs.start(tmp_path, [sys.executable, "-c", "pass"])
    assert _wait(lambda: jobs.info(tmp_path, job_id).status == "done")
    at = AppTest.from_function(_panel, args=(str(tmp_path), job_id)).run(timeout=30)
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert any("Started in a new process: the warm process is off (DID_STANDBY=0)" in c for c in captions), captions


def _panel(root, job_id):
    from did_ui import job_panel

    job_panel.job_panel(root, job_id)
