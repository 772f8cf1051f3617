"""Background jobs (scoring, building the demo) that outlive a page rerun and a server restart.

A job is a folder `<workspace>/jobs/<id>/`:

    job.json        {"id", "kind", "argv", "created", "pid"}   written once, atomically
    log.txt         the command's stdout and stderr
    progress.jsonl  JSON lines {"stage", "done", "total", "eta_s"}: the one way progress reaches the
                    page; `start` appends `--progress-json <dir>/progress.jsonl` to every command
    rc              the exit status, written by the wrapper when the command ends
    cancelled       present when the user pressed Cancel
    paused_s        the seconds the command has been held stopped while pages were drawn

`start()` launches `python -m did_ui.jobs wrap <dir>` in its own session (or hands the job to the
warm process, did_ui/standby.py): that wrapper runs the argv (a list, never a shell; did_ui/job_argv.py
builds the dashboard's) in a process group of its own, waits, and writes `rc`, so the status
survives the Streamlit process; while it waits it pauses the command during page draws
(did_ui/pausing.py). No streamlit import here: the wrapper runs without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from did_core.files import atomic_write_text, pid_alive
from did_ui import job_argv, pausing, standby

STARTING_S = 60.0  # a job.json without a pid yet is a job being launched (start() writes it twice)
Status = Literal["running", "done", "failed", "cancelled", "interrupted"]

_live: dict[str, subprocess.Popen] = {}  # reaped on poll so finished wrappers leave no zombies


@dataclass(frozen=True)
class JobInfo:
    """One job's state, read from its folder."""

    id: str
    kind: str
    argv: list[str]
    created: float
    status: Status
    stage: str | None
    done: int | None
    total: int | None
    eta_s: float | None
    error: str | None
    """The command's `error:` line, when it failed."""
    log_tail: str
    paused_s: float = 0.0
    """How long the job has been held stopped while the dashboard drew pages (did_ui/pausing.py)."""
    cold_start: str | None = None
    """Why the job started in a new process rather than the dashboard's warm one (`standby.take`)."""

    @property
    def fraction(self) -> float | None:
        return None if not self.total or self.done is None else min(1.0, self.done / self.total)


def jobs_dir(workspace: str | Path) -> Path:
    return Path(workspace) / "jobs"


def start(workspace: str | Path, argv: list[str], kind: str = "score", cwd: str | None = None) -> str:
    """Launch `argv` in the background; returns the job id."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"
    d = jobs_dir(workspace) / job_id
    d.mkdir(parents=True)
    # the CLI's JSON-lines progress (ARCHITECTURE.md "Progress and jobs"), for every command
    argv = _without_flag(argv, "--progress-json") + ["--progress-json", str(d / "progress.jsonl")]
    meta = {"id": job_id, "kind": kind, "argv": argv, "created": time.time(), "pid": None}
    atomic_write_text(d / "job.json", json.dumps(meta))
    env = standby.job_env()
    pid, cold = standby.take(workspace, d, argv, env) if cwd is None else (None, "run from another folder")
    if pid is None:
        proc = subprocess.Popen([sys.executable, "-m", "did_ui.jobs", "wrap", str(d)],
                                cwd=cwd or str(Path(__file__).resolve().parent.parent), env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        _live[job_id] = proc
    atomic_write_text(d / "job.json", json.dumps(meta | {"pid": pid or proc.pid, "standby": pid is not None}
                                                 | ({"cold_start": cold} if pid is None else {})))
    return job_id


def claim_once(workspace: str | Path, name: str) -> bool:
    """True for exactly one caller per workspace and `name` (an O_EXCL marker file), so two browser
    sessions opening an empty workspace at once start one demo build, not two."""
    base = jobs_dir(workspace)
    base.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(base / f".{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def start_demo_once(workspace: str | Path) -> str | None:
    """Start the embedded demo's build in an empty workspace for its first visitor: once per
    workspace (`claim_once`), never when a demo job exists or with DID_AUTO_DEMO=0. The Runs page
    calls it before it draws anything; returns the job id it started, else None."""
    if os.environ.get("DID_AUTO_DEMO", "1") == "0" or list_jobs(workspace, kind="demo"):
        return None
    if not claim_once(workspace, "auto-demo"):
        return None
    return start(workspace, job_argv.demo_argv(str(workspace)), kind="demo")


def _without_flag(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _tail(path: Path, n: int = 6000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _progress(d: Path) -> tuple[str | None, int | None, int | None, float | None]:
    """(stage, done, total, eta_s) from the last complete JSON-lines record of progress.jsonl."""
    text = _tail(d / "progress.jsonl", 4000).strip().splitlines()
    for line in reversed(text):
        try:
            p = json.loads(line)
            eta = p.get("eta_s")
            return p.get("stage"), int(p["done"]), int(p["total"]), float(eta) if eta is not None else None
        except (ValueError, KeyError, TypeError):
            continue
    return None, None, None, None


def info(workspace: str | Path, job_id: str) -> JobInfo | None:
    """The job's state from its files, or None when `job_id` is not a job of this workspace."""
    base = jobs_dir(workspace)
    d = base / job_id
    if "/" in job_id or job_id.startswith(".") or not (d / "job.json").is_file():
        return None
    meta = json.loads((d / "job.json").read_text())
    if (p := _live.get(job_id)) is not None and p.poll() is not None:
        _live.pop(job_id, None)
    log = _tail(d / "log.txt")
    rc_text = (d / "rc").read_text().strip() if (d / "rc").is_file() else None
    status: Status
    if (d / "cancelled").exists() and (rc_text is None or rc_text != "0"):
        status = "cancelled" if rc_text is not None or not pid_alive(meta.get("pid")) else "running"
    elif rc_text is not None:
        status = "done" if rc_text == "0" else "failed"
    else:
        starting = meta.get("pid") is None and time.time() - float(meta.get("created") or 0) < STARTING_S
        status = "running" if starting or pid_alive(meta.get("pid")) else "interrupted"
    errors = [ln.strip() for ln in log.splitlines() if ln.strip().startswith("error:")]
    error = errors[-1] if errors else (f"exited with status {rc_text}" if status == "failed" else None)
    stage, done, total, eta = _progress(d)
    if status != "running":
        eta = None
    elif eta is None and done and total and done < total:
        elapsed = time.time() - float(meta["created"])
        eta = elapsed * (total - done) / done
    return JobInfo(id=job_id, kind=meta["kind"], argv=list(meta["argv"]), created=float(meta["created"]),
                   status=status, stage=stage, done=done, total=total, eta_s=eta, error=error,
                   log_tail="\n".join(log.replace("\r", "\n").splitlines()[-40:]), paused_s=_paused(d),
                   cold_start=meta.get("cold_start"))


def _paused(d: Path) -> float:
    try:
        return float((d / PAUSED).read_text())
    except (OSError, ValueError):
        return 0.0


def list_jobs(workspace: str | Path, kind: str | None = None) -> list[JobInfo]:
    """Every job of the workspace (of `kind`, when given), newest first. A job's id names its kind
    (`start`: "<time>-<kind>-<hex>"), so only those folders are read: the Runs page asks for the demo's
    job on every draw, and a workspace's score jobs pile up."""
    base = jobs_dir(workspace)
    if not base.is_dir():
        return []
    dirs = [d for d in sorted(base.iterdir(), reverse=True)
            if d.is_dir() and (kind is None or f"-{kind}-" in d.name)]
    return [j for d in dirs if (j := info(workspace, d.name)) and (kind is None or j.kind == kind)]


def cancel(workspace: str | Path, job_id: str) -> bool:
    """Stop a running job (SIGTERM to the wrapper's process group; the wrapper forwards it to the
    command's, and wakes a paused command). True when a signal was sent."""
    job = info(workspace, job_id)
    if job is None or job.status != "running":
        return False
    d = jobs_dir(workspace) / job_id
    (d / "cancelled").touch()
    pid = json.loads((d / "job.json").read_text()).get("pid")
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except (ProcessLookupError, PermissionError, TypeError):
        return False
    return True


def restart(workspace: str | Path, job_id: str) -> str | None:
    """Run a stopped job's command again (the scorer resumes from its finished chunks)."""
    job = info(workspace, job_id)
    if job is None or job.status == "running":
        return None
    return start(workspace, job.argv, kind=job.kind)


PAUSED = "paused_s"
"""`<job>/paused_s`: the seconds the job has been held stopped for page draws, so far."""


JOB_NICE_DEFAULT = 0
"""A job runs at the server's priority, as the CLI does. It used to run as a background batch task
(SCHED_IDLE): torch spreads each forward over every core and waits for its slowest thread, and under
SCHED_IDLE the thread on a core that anything else keeps busy (a browser drawing the progress panel,
another program) is starved, so the whole job crawled — 3.6x slower than the CLI from the Score page
(issue 14; bench/job_throughput.py measures it). Pages still open fast because the job is stopped
while a page is drawn (did_ui/pausing.py)."""


def _lower_priority() -> None:
    """The job's CPU priority: nice DID_JOB_NICE (default JOB_NICE_DEFAULT: the server's), or Linux's
    SCHED_IDLE with DID_JOB_NICE=idle."""
    nice = os.environ.get("DID_JOB_NICE", str(JOB_NICE_DEFAULT)).strip().lower()
    if nice == "idle":
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    with contextlib.suppress(OSError, ValueError):
        if int(nice):
            os.nice(int(nice))


def _popen(argv: list[str], log, preexec) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            process_group=0, preexec_fn=preexec)  # noqa: PLW1509 — single-threaded here


def wrap(d: Path, launch=_popen) -> int:
    """Run the job's argv in a process group of its own, logging to log.txt; pause it while the
    dashboard draws (`pausing.supervise`); write rc when it ends (also on SIGTERM, which it forwards).
    `launch(argv, log, preexec)` starts it: a new process, or a fork of a warm one (`standby`)."""
    meta = json.loads((d / "job.json").read_text())
    with (d / "log.txt").open("ab", buffering=0) as log:  # the wrapper keeps its priority: it must act at once
        child = launch(meta["argv"], log, _lower_priority)

        ending = threading.Event()

        def forward(signum: int, _frame: object) -> None:
            ending.set()  # no more pauses: a paused command must run to act on the signal
            pausing.signal_group(child.pid, signum)
            pausing.signal_group(child.pid, signal.SIGCONT)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        rc = pausing.supervise(child, d.parent / pausing.DRAWING, pausing.yield_seconds(), ending,
                               on_resume=lambda total: atomic_write_text(d / PAUSED, f"{total:.3f}"))
    atomic_write_text(d / "rc", str(rc))
    return rc


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "wrap":
        sys.exit(wrap(Path(sys.argv[2])))
    print("usage: python -m did_ui.jobs wrap JOB_DIR", file=sys.stderr)
    sys.exit(2)
