"""The background-job panel: one job's progress, ETA, log and cancel/restart (`job_panel`, a
fragment that polls every second), its one-line label, and Runs' empty-workspace panel for the
embedded demo's build. Drawing starts no job: a page starts one explicitly (a button press, the
Score form, `jobs.start_demo_once`)."""

from __future__ import annotations

import html
import time

import streamlit as st

from did_ui import data, job_argv, jobs, widgets

DEMO_BUILDING = ("Building the embedded demo: a tiny GPT-2 reference and three DPO runs with TRL, each scored as "
                 "soon as it is trained; each run appears here when it is ready.")


def demo_panel(root: str) -> None:
    """Empty workspace on Runs: the demo's build (pages/runs.py starts it for the first visitor,
    `jobs.start_demo_once`), or a button that builds it."""
    st.subheader("This workspace has no runs yet")
    demo_jobs = jobs.list_jobs(root, kind="demo")
    if demo_jobs and demo_jobs[0].status != "done":  # a finished build whose runs were since removed: offer it again
        st.write(DEMO_BUILDING)
        job_panel(root, demo_jobs[0].id)
    elif st.button("Build the embedded demo", type="primary"):
        jobs.start(root, job_argv.demo_argv(root), kind="demo")
        st.rerun()


def demo_still_building(root: str, shown_run: str) -> None:
    """Runs, once the demo's first run is in: the build's panel while it goes on (or has failed), so the
    visitor sees the runs so far, what is still coming, and each new run as it lands. A build that failed
    or whose process died stays shown (with its error, log and "Run again"); a cancelled one does not.
    `shown_run`: the run the page shows, kept when a new run lands (the default run, the first by name,
    would otherwise change under the visitor: demo-high lands after demo-low)."""
    demo_jobs = jobs.list_jobs(root, kind="demo")
    if demo_jobs and demo_jobs[0].status in ("running", "failed", "interrupted"):
        st.write(DEMO_BUILDING)
        job_panel(root, demo_jobs[0].id, keep_run=shown_run)


def job_label(job: jobs.JobInfo, now: float | None = None) -> str:
    """The job's one-line status: "score job `id`: **running** · score · 120/512 · ETA 9 s". The stage
    shows only while running (a job whose last stage was "done" but whose wrapper has not yet
    written its exit status reads "running · 512/512", never "running · done")."""
    label = f"{job.kind} job `{job.id}`: **{job.status}**"
    if job.stage and job.status == "running" and job.stage != "done":
        label += f" · {html.escape(job.stage)}"
    if job.done is not None and job.total:
        label += f" · {job.done}/{job.total}"
    if job.paused_s >= 0.05:
        label += f" · held {job.paused_s:.1f} s for page draws"
    if job.eta_s is not None:
        label += f" · ETA {job.eta_s:.0f} s"
    elif job.status == "running":
        label += f" · {(now or time.time()) - job.created:.0f} s elapsed"
    return label


@st.fragment(run_every=1.0)
def job_panel(root: str, job_id: str, keep_run: str | None = None) -> None:
    """Progress, ETA, log and cancel/restart for one background job; polls every second. A demo job's
    panel reruns the page when a run lands; `keep_run` is then written to a URL that names no run, so
    the page goes on showing it."""
    job = jobs.info(root, job_id)
    if job is None:
        st.warning(f"Job {job_id} not found.")
        return
    label = job_label(job)
    st.progress(job.fraction if job.fraction is not None else (1.0 if job.status == "done" else 0.0), text=label)
    if job.status == "failed":
        st.error(job.error or "failed")
    if job.cold_start:
        st.caption(f"Started in a new process: {job.cold_start}. Its imports and model loading "
                   "add a few seconds that a job in the dashboard's warm process does not pay.")
    c1, c2 = st.columns(2)
    if job.status == "running" and c1.button("Cancel", key=f"cancel-{job.id}"):
        jobs.cancel(root, job.id)
    if job.status in ("failed", "cancelled", "interrupted") and c2.button("Run again (resumes)", key=f"again-{job.id}"):
        jobs.restart(root, job.id)
        st.rerun(scope="app")
    # Drawn only while open: the panel redraws every second, and a collapsed expander's content is
    # still sent and mounted each time (browser CPU taken from the job it reports on).
    log = widgets.drill_down("Log", key=f"log-{job.id}", expanded=job.status == "failed")
    if log is not None:
        log.code(job.log_tail or "(no output yet)", language=None)
    if job.kind == "demo":  # a demo run just landed (or was rewritten): the page's run list re-reads it
        runs_now = data.version(root)
        landed = st.session_state.setdefault("_did_demo_runs_seen", {})
        if landed.setdefault(job.id, runs_now) != runs_now:
            landed[job.id] = runs_now
            if keep_run and not st.query_params.get("run"):
                st.query_params["run"] = keep_run
            st.rerun(scope="app")
    seen = st.session_state.setdefault("_did_jobs_seen", {})
    if seen.get(job.id) == "running" and job.status == "done":  # its run.json is new: the views re-read it
        seen[job.id] = job.status
        st.rerun(scope="app")
    seen[job.id] = job.status
