"""Background jobs (did_ui/jobs.py): a real command started, its progress and exit status read back,
cancelled and restarted, its priority; the one-off demo build."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from did_ui import jobs


def _wait(ws, job_id, until=("done", "failed", "cancelled"), timeout=20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        info = jobs.info(ws, job_id)
        if info.status in until:
            return info
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {jobs.info(ws, job_id).status}")


def test_job_runs_in_background_with_progress_and_exit_status(tmp_path):
    code = ("import json, sys\n"  # jobs.start gives every command --progress-json FILE
            "f = open(sys.argv[sys.argv.index('--progress-json') + 1], 'a')\n"
            "f.write(json.dumps({'stage': 'score', 'done': 3, 'total': 4}) + '\\n'); f.flush()\n"
            "print('hello')\n")
    job_id = jobs.start(tmp_path, [sys.executable, "-c", code], kind="score")
    info = _wait(tmp_path, job_id)
    assert info.status == "done" and (info.stage, info.done, info.total) == ("score", 3, 4)
    assert "hello" in info.log_tail and info.error is None
    assert [j.id for j in jobs.list_jobs(tmp_path)] == [job_id]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
@pytest.mark.parametrize("nice", [None, "7", "idle"])
def test_job_priority(tmp_path, monkeypatch, nice):
    """By default the command runs at the server's priority, as the CLI does (under SCHED_IDLE a
    busy core starved one of torch's threads and the whole job: bench/job_throughput.py);
    DID_JOB_NICE=N asks for a niceness, DID_JOB_NICE=idle for SCHED_IDLE. The server keeps its own."""
    if nice is None:
        monkeypatch.delenv("DID_JOB_NICE", raising=False)
    else:
        monkeypatch.setenv("DID_JOB_NICE", nice)
    code = "import os; print('sched', os.sched_getscheduler(0), 'nice', os.nice(0))"
    info = _wait(tmp_path, jobs.start(tmp_path, [sys.executable, "-c", code]))
    want = {None: f"sched {os.SCHED_OTHER} nice {os.nice(0)}", "7": f"sched {os.SCHED_OTHER} nice {os.nice(0) + 7}",
            "idle": f"sched {os.SCHED_IDLE} nice {os.nice(0)}"}[nice]
    assert info.status == "done" and want in info.log_tail, info.log_tail
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_failed_job_reports_the_error_line(tmp_path):
    code = ("import json, sys\n"
            "open(sys.argv[sys.argv.index('--progress-json') + 1], 'a').write(json.dumps({'stage': 'score', 'done': 12, 'total': 40}) + '\\n')\n"
            "sys.stderr.write('  99/100 pairs\\nerror: data.jsonl row 3: missing column chosen\\n'); sys.exit(2)")
    info = _wait(tmp_path, jobs.start(tmp_path, [sys.executable, "-c", code]))
    assert info.status == "failed"
    assert info.error == "error: data.jsonl row 3: missing column chosen"
    assert (info.done, info.total) == (12, 40)  # from progress.jsonl, the one channel; never the log's text


def test_cancel_then_restart(tmp_path):
    job_id = jobs.start(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"])
    assert _wait(tmp_path, job_id, until=("running",)).status == "running"
    assert jobs.cancel(tmp_path, job_id)
    assert _wait(tmp_path, job_id).status == "cancelled"
    again = jobs.restart(tmp_path, job_id)
    first, second = jobs.info(tmp_path, job_id).argv, jobs.info(tmp_path, again).argv
    assert again and again != job_id and second[:-2] == first[:-2]  # the same command, its progress in the new folder
    assert second[-2:] == ["--progress-json", str(jobs.jobs_dir(tmp_path) / again / "progress.jsonl")]
    jobs.cancel(tmp_path, again)
    _wait(tmp_path, again)


def test_job_state_survives_the_launcher(tmp_path):
    """A job whose wrapper vanished without an exit status reads as interrupted (resumable)."""
    d = tmp_path / "jobs" / "20260101-000000-score-abcdef"
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"id": d.name, "kind": "score", "argv": ["x"], "created": 0, "pid": 2**22 + 7}))
    assert jobs.info(tmp_path, d.name).status == "interrupted"
    assert jobs.info(tmp_path, "../../etc") is None


def test_claim_once(tmp_path):
    assert jobs.claim_once(tmp_path, "auto-demo") and not jobs.claim_once(tmp_path, "auto-demo")
    assert jobs.list_jobs(tmp_path) == []  # the marker is not a job


def test_the_demo_build_starts_once_and_only_when_the_page_asks(tmp_path, monkeypatch):
    """Drawing the empty-workspace panel starts no job; `jobs.start_demo_once`, which pages/runs.py calls,
    starts one for the first visitor of a workspace and never again (another session, a later visit,
    DID_AUTO_DEMO=0)."""
    from streamlit.testing.v1 import AppTest

    started = []
    monkeypatch.setattr(jobs, "start", lambda root, argv, kind="score", cwd=None: started.append((argv, kind)) or "j")
    monkeypatch.setenv("DID_AUTO_DEMO", "1")
    at = AppTest.from_function(_demo_panel, args=(str(tmp_path / "a"),)).run(timeout=30)
    assert not at.exception and started == []  # the panel alone: a button, no job
    assert [b.label for b in at.button] == ["Build the embedded demo"]
    assert jobs.start_demo_once(tmp_path / "a") == "j"
    assert jobs.start_demo_once(tmp_path / "a") is None  # a second session of the same workspace
    assert [(argv[-3:], kind) for argv, kind in started] == [(["demo", "--workspace", str(tmp_path / "a")], "demo")]
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    assert jobs.start_demo_once(tmp_path / "b") is None and len(started) == 1


def _demo_panel(root):
    from did_ui import job_panel

    job_panel.demo_panel(root)
