"""Background jobs (did_ui/jobs.py): a real command started, its progress and exit status read back,
cancelled and restarted, its priority; the one-off demo build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def _fake_demo_job(root, stage="train high", status="running") -> str:
    """A demo job's folder as `jobs.start` leaves it, its process this one (alive: running), at `stage`."""
    job_id = "20261203-120000-demo-abcdef"
    d = jobs.jobs_dir(root) / job_id
    d.mkdir(parents=True)
    pid = os.getpid()
    if status == "interrupted":  # its process is gone
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        pid = proc.pid
    (d / "job.json").write_text(json.dumps({"id": job_id, "kind": "demo", "argv": ["demo"], "created": time.time(),
                                            "pid": pid}))
    (d / "progress.jsonl").write_text(json.dumps({"stage": stage, "done": 3, "total": 10, "time": time.time()}) + "\n")
    if status == "failed":
        (d / "rc").write_text("1")
    return job_id


@pytest.mark.parametrize("status", ["running", "failed", "interrupted"])
def test_runs_shows_the_demos_first_runs_while_the_rest_still_build(tmp_path, monkeypatch, status):
    """The demo lands run by run (did_core/demo.py): once one run is in, Runs shows it, with the build's
    panel above it while the build goes on or has failed, and not once it is done."""
    from streamlit.testing.v1 import AppTest

    from did_core.synthetic_ws import make_synthetic_workspace
    from did_ui.job_panel import DEMO_BUILDING

    make_synthetic_workspace(tmp_path, n_pairs=8, n_checkpoints=2, seed=0, tokens=False, run_name="demo-low")
    job_id = _fake_demo_job(tmp_path, status=status)
    monkeypatch.setenv("DID_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("DID_AUTO_DEMO", "1")  # a demo job exists: no second build is started
    monkeypatch.setenv("DID_WARM_UP", "0")
    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert DEMO_BUILDING in [m.value for m in at.markdown]
    assert any(h.value == "Checkpoints of demo\\-low" for h in at.subheader), [h.value for h in at.subheader]
    assert [(j.id, j.status) for j in jobs.list_jobs(tmp_path, kind="demo")] == [(job_id, status)]
    (jobs.jobs_dir(tmp_path) / job_id / "rc").write_text("0")  # the build is done (run again, resumed): the panel goes
    at.run()
    assert DEMO_BUILDING not in [m.value for m in at.markdown]


def _job_panel_counting_draws(root, job_id):
    import streamlit as st

    from did_ui import job_panel

    st.session_state["draws"] = st.session_state.get("draws", 0) + 1
    job_panel.job_panel(root, job_id, keep_run="demo-low")


def test_the_demo_panel_redraws_the_page_when_a_run_lands(tmp_path):
    """While the demo builds, its panel (a fragment that polls) reruns the whole page when a run is added or
    rewritten, so the page's run list takes it in, and pins the run shown in a URL that named none (the
    default run would change: demo-high sorts before demo-low); otherwise it redraws only itself."""
    from streamlit.testing.v1 import AppTest

    from did_core.synthetic_ws import make_synthetic_workspace

    job_id = _fake_demo_job(tmp_path)
    at = AppTest.from_function(_job_panel_counting_draws, args=(str(tmp_path), job_id)).run(timeout=30)
    assert not at.exception and at.session_state["draws"] == 1
    at.run(timeout=30)
    assert at.session_state["draws"] == 2  # nothing landed: one draw
    make_synthetic_workspace(tmp_path, n_pairs=8, n_checkpoints=2, seed=0, tokens=False, run_name="demo-low")
    at.run(timeout=30)
    assert not at.exception and at.session_state["draws"] == 4  # a run landed: the panel asked for a full rerun
    assert at.query_params["run"] == "demo-low"
    at.query_params["run"] = "other"  # a URL that names a run is left alone
    make_synthetic_workspace(tmp_path, n_pairs=8, n_checkpoints=2, seed=0, tokens=False, run_name="demo-high")
    at.run(timeout=30)
    assert at.session_state["draws"] == 6 and at.query_params["run"] == "other"
