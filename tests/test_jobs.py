"""Background jobs pause while the dashboard draws a page (did_ui.jobs: `foreground`, `_supervise`),
never for good: a run of pages without a break slows a job, a cancel still stops it, and a job whose
wrapper dies while it is paused does not stay stopped."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from did_core.files import pid_alive
from did_ui import jobs

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")

@pytest.fixture(autouse=True)
def _no_earlier_page(monkeypatch):
    """Each test starts with no page of an earlier test (in this process) still holding jobs."""
    monkeypatch.setattr(jobs, "HOLDS", jobs.Holds())


COUNTER = ("import os, sys, time\n"
           "open(sys.argv[2], 'w').write(str(os.getpid()))\n"
           "n = 0\n"
           "while True:\n"
           "    n += 1\n"
           "    with open(sys.argv[1] + '.tmp', 'w') as f: f.write(str(n))\n"
           "    os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
           "    time.sleep(0.01)\n")
"""A command that counts up every 10 ms into a file (and writes its pid first), so a test can see it
stop and run."""


def _count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def _wait_for(cond, timeout: float = 10.0, what: str = "") -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _start_counter(ws: Path, monkeypatch, yield_s: str, max_pause: str = "5") -> tuple[str, Path, Path]:
    monkeypatch.setenv("DID_JOB_YIELD_S", yield_s)
    monkeypatch.setenv("DID_JOB_MAX_PAUSE_S", max_pause)
    counter, pid_file = ws / "count", ws / "pid"
    job_id = jobs.start(ws, [sys.executable, "-c", COUNTER, str(counter), str(pid_file)])
    _wait_for(lambda: _count(counter) > 5, what="the command to start counting")
    return job_id, counter, pid_file


def _advances(counter: Path, seconds: float) -> int:
    before = _count(counter)
    time.sleep(seconds)
    return _count(counter) - before


def _stop(ws: Path, job_id: str) -> None:
    jobs.cancel(ws, job_id)
    _wait_for(lambda: jobs.info(ws, job_id).status != "running", what="the job to stop")


def test_a_job_pauses_while_a_page_is_drawn_and_resumes_after(tmp_path, monkeypatch):
    job_id, counter, _ = _start_counter(tmp_path, monkeypatch, yield_s="2")
    try:
        assert _advances(counter, 0.3) > 5  # running before any page
        with jobs.foreground(tmp_path):
            time.sleep(0.3)  # the wrapper polls every 50 ms
            assert _advances(counter, 0.6) == 0, "the job ran while a page was being computed"
        ended = time.time()
        assert _advances(counter, 0.5) == 0, "the job ran within yield_s of the page's end (the browser draws then)"
        _wait_for(lambda: _count(counter) > 0 and _advances(counter, 0.2) > 5, what="the job to resume")
        assert time.time() - ended >= 2 - 0.1
        # the panel says how long pages held it: the page (~0.9 s) and yield_s after it (2 s)
        _wait_for(lambda: jobs.info(tmp_path, job_id).paused_s > 0, what="the paused time to be written")
        assert 2.0 <= jobs.info(tmp_path, job_id).paused_s <= 5.0
    finally:
        _stop(tmp_path, job_id)


def test_the_run_that_starts_a_job_does_not_pause_it(tmp_path, monkeypatch):
    """The Score page's submit starts the job inside its own script run: that hold began before the
    job and is ignored (the job scores while the page finishes); the next page's run pauses it."""
    (tmp_path / "jobs").mkdir()
    with jobs.foreground(tmp_path):  # the submit
        job_id, counter, _ = _start_counter(tmp_path, monkeypatch, yield_s="2")
        assert _advances(counter, 0.4) > 5, "the job was paused by the run that started it"
    try:
        assert _advances(counter, 0.4) > 5, "the job was paused after the run that started it ended"
        assert jobs.info(tmp_path, job_id).paused_s == 0.0
        with jobs.foreground(tmp_path):  # a later click
            time.sleep(0.3)
            assert _advances(counter, 0.5) == 0, "a later page did not pause the job"
    finally:
        _stop(tmp_path, job_id)


def test_yield_zero_never_pauses(tmp_path, monkeypatch):
    job_id, counter, _ = _start_counter(tmp_path, monkeypatch, yield_s="0")
    try:
        with jobs.foreground(tmp_path):
            time.sleep(0.2)
            assert _advances(counter, 0.5) > 5
    finally:
        _stop(tmp_path, job_id)


def test_pages_without_a_break_slow_a_job_but_cannot_stall_it(tmp_path, monkeypatch):
    """Paused at most DID_JOB_MAX_PAUSE_S at a time, then it runs MIN_RUN_S (1 s) whatever the pages do."""
    job_id, counter, _ = _start_counter(tmp_path, monkeypatch, yield_s="0.3", max_pause="0.5")
    try:
        with jobs.foreground(tmp_path):
            time.sleep(0.2)
            assert _advances(counter, 0.25) == 0
            assert _advances(counter, 1.5) > 5, "a page held the job longer than MAX_PAUSE_S"
    finally:
        _stop(tmp_path, job_id)


def test_cancel_stops_a_paused_job(tmp_path, monkeypatch):
    job_id, counter, pid_file = _start_counter(tmp_path, monkeypatch, yield_s="30")
    with jobs.foreground(tmp_path):
        time.sleep(0.3)
        assert _advances(counter, 0.3) == 0
        t0 = time.time()
        assert jobs.cancel(tmp_path, job_id)
        _wait_for(lambda: jobs.info(tmp_path, job_id).status == "cancelled", timeout=5, what="the cancel")
    assert time.time() - t0 < 5
    _wait_for(lambda: not pid_alive(int(pid_file.read_text())), timeout=5, what="the command to exit")


def test_a_paused_job_whose_wrapper_is_killed_does_not_stay_stopped(tmp_path, monkeypatch):
    """kill -9 of the wrapper orphans the stopped command's process group; the kernel then sends it
    SIGHUP and SIGCONT, so no stopped process is left behind (and the job reads as interrupted)."""
    job_id, counter, pid_file = _start_counter(tmp_path, monkeypatch, yield_s="30")
    child = int(pid_file.read_text())
    with jobs.foreground(tmp_path):
        time.sleep(0.3)
        assert _advances(counter, 0.3) == 0
        wrapper = json.loads((jobs.jobs_dir(tmp_path) / job_id / "job.json").read_text())["pid"]
        os.kill(wrapper, signal.SIGKILL)
        _wait_for(lambda: not pid_alive(child), timeout=5, what="the orphaned command to exit")
    _wait_for(lambda: jobs.info(tmp_path, job_id).status == "interrupted", timeout=5, what="interrupted")


def test_foreground_holds_jobs_until_the_last_concurrent_run_ends(tmp_path):
    (tmp_path / "jobs").mkdir()
    marker = tmp_path / "jobs" / jobs.DRAWING
    with jobs.foreground(tmp_path):
        with jobs.foreground(tmp_path):
            assert marker.stat().st_mtime > time.time() + 30  # in the future while a run lasts
        assert marker.stat().st_mtime > time.time() + 30, "one run ending released jobs while another ran"
    assert abs(marker.stat().st_mtime - time.time()) < 2


def test_foreground_makes_no_folder_in_a_workspace_without_jobs(tmp_path):
    with jobs.foreground(tmp_path / "ws"):
        pass
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(("value", "want"), [("0", 0.0), ("2.5", 2.5), ("-1", 0.0)])
def test_yield_seconds_from_the_environment(monkeypatch, value, want):
    monkeypatch.setenv("DID_JOB_YIELD_S", value)
    assert jobs.yield_seconds() == want


def test_yield_seconds_default_depends_on_a_gpu(monkeypatch):
    monkeypatch.delenv("DID_JOB_YIELD_S", raising=False)
    assert jobs.yield_seconds() == (0.0 if Path("/dev/nvidiactl").exists() else 1.0)


def test_every_script_run_of_the_dashboard_holds_jobs(tmp_path, monkeypatch):
    """app.py wraps each page's run in `foreground`: after a run the marker holds the run's end time."""
    from streamlit.testing.v1 import AppTest

    (tmp_path / "jobs").mkdir()
    monkeypatch.setenv("DID_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    before = time.time()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    mtime = (tmp_path / "jobs" / jobs.DRAWING).stat().st_mtime
    assert before - 1 <= mtime <= time.time() + 1


def test_a_page_load_holds_jobs_longer_and_a_later_click_does_not_cut_it_short(tmp_path):
    (tmp_path / "jobs").mkdir()
    marker = tmp_path / "jobs" / jobs.DRAWING
    with jobs.foreground(tmp_path, settle_s=5.0):
        pass
    end = time.time()
    assert end + 4 < marker.stat().st_mtime <= end + 5.5
    with jobs.foreground(tmp_path):  # a click right after: its own end is earlier
        pass
    assert end + 4 < marker.stat().st_mtime <= end + 5.5
