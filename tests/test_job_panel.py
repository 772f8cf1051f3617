"""The job panel (did_ui/job_panel.py): a job's one-line label."""

from __future__ import annotations

import pytest

from did_ui import jobs


def test_job_label_never_reads_done_twice():
    pytest.importorskip("streamlit")
    from did_ui.job_panel import job_label

    def job(status, stage, done, total, eta=None, paused=0.0):
        return jobs.JobInfo(id="j", kind="score", argv=[], created=100.0, status=status, stage=stage, done=done,
                            total=total, eta_s=eta, error=None, log_tail="", paused_s=paused)
    assert job_label(job("running", "score", 120, 512, 9.0, paused=1.25)) == (
        "score job `j`: **running** · score · 120/512 · held 1.2 s for page draws · ETA 9 s")
    assert job_label(job("done", "done", 512, 512)) == "score job `j`: **done** · 512/512"
    assert job_label(job("running", "done", 512, 512), now=110.0) == "score job `j`: **running** · 512/512 · 10 s elapsed"
    assert job_label(job("running", "score", 120, 512, 9.0)) == "score job `j`: **running** · score · 120/512 · ETA 9 s"
