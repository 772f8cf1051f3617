"""Jobs yield to the dashboard: a running job is paused while a page is computed and drawn.

On a machine without an NVIDIA GPU a job's wrapper (did_ui/jobs.py `wrap`) keeps its command's
process group stopped (SIGSTOP/SIGCONT) while a page is being computed and drawn. app.py wraps every
script run in `HOLDS.foreground(workspace)`, which keeps the workspace's `jobs/.drawing` marker's
mtime in the future while a run lasts and sets it to the end time after; the job waits `yield_s`
more (the browser drawing what the run sent). It never waits longer than `max_pause_seconds()` in
one go before running `MIN_RUN_S` again, so browsing without a break slows a job but cannot stall
it. `DID_JOB_YIELD_S` sets the wait (0: never pause).

The state is in objects, not module globals: a `Holds` is one server's script runs in progress (one
per process: `HOLDS`), a `PauseRule` one job's pause decisions. Both take their clock, and
`supervise` its clock, its signals and its child, so tests drive them step by step in fake time
(tests/test_jobs.py). No streamlit import here: the wrapper runs without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

DRAWING = ".drawing"
"""`<workspace>/jobs/.drawing`: its mtime is when the dashboard's last script run ended (in the
future while one runs); its content is when the current hold began."""
POLL_S = 0.05
"""How often a job's wrapper looks at the marker and its command."""
MAX_PAUSE_S = 5.0
"""The longest a job stays paused in one go (`DID_JOB_MAX_PAUSE_S` overrides it)."""
MIN_RUN_S = 1.0
"""How long a job runs after a pause before it may be paused again."""
HOLD_S = 60.0
"""A script run still going after this long no longer holds jobs back."""
NEW_PAGE_SETTLE_S = 1.0
"""A page load draws for longer after its script than a click does: the browser also loads and runs
the Plotly chunk (0.7–1.0 s more, measured on the chart pages with one idle Chromium)."""

Action = Literal["stop", "resume"]


def yield_seconds() -> float:
    """How long a job waits after a script run before it runs again: `DID_JOB_YIELD_S`, else 1 s,
    or 0 (never pause) on a machine with an NVIDIA GPU, where jobs keep the GPU busy, not the CPU."""
    value = os.environ.get("DID_JOB_YIELD_S")
    if value is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value))
    return 0.0 if Path("/dev/nvidiactl").exists() else 1.0


def max_pause_seconds() -> float:
    """`DID_JOB_MAX_PAUSE_S`, else MAX_PAUSE_S."""
    with contextlib.suppress(ValueError):
        return max(0.0, float(os.environ.get("DID_JOB_MAX_PAUSE_S", MAX_PAUSE_S)))
    return MAX_PAUSE_S


class Holds:
    """One server's script runs in progress and the latest end (+ settle) of those just ended: what
    `foreground` writes into a workspace's DRAWING marker. One per process (`HOLDS`); `clock` gives
    the wall-clock time (time.time; a test passes a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.runs = 0
        self.until = 0.0
        self.clock = clock
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def foreground(self, workspace: str | Path, settle_s: float = 0.0) -> Iterator[None]:
        """Around one script run of the dashboard (app.py): running jobs pause from its start until
        `yield_seconds()` after the last concurrent run ends, plus `settle_s` for this run (app.py
        gives a session's first run, a page load, NEW_PAGE_SETTLE_S). See `supervise`. One utime call."""
        marker = Path(workspace) / "jobs" / DRAWING
        with self.lock:
            self.runs += 1
            now = self.clock()
            touch(marker, now + HOLD_S, began=now if self.runs == 1 else None)
        try:
            yield
        finally:
            with self.lock:
                self.runs -= 1
                self.until = max(self.until, self.clock() + settle_s)
                if self.runs == 0:
                    touch(marker, self.until)


HOLDS = Holds()
"""This server's script runs (app.py holds every page run in it)."""


def pages_running() -> int:
    """How many of this server's script runs are in progress (see `Holds.foreground`)."""
    return HOLDS.runs


def touch(marker: Path, when: float, began: float | None = None) -> None:
    """Hold jobs until `when` (the marker's mtime). A new hold (the first of overlapping script runs)
    also writes when it `began` into the marker, so that a job ignores the hold it was started in."""
    if not marker.parent.is_dir():  # no job has ever run here: nothing to pause, and no folder to make
        return
    with contextlib.suppress(OSError):
        if began is not None:
            marker.write_text(repr(began))
        else:
            marker.touch()
        os.utime(marker, (when, when))


def hold_began(marker: Path) -> float:
    """When the marker's current hold began (0.0 when it does not say)."""
    try:
        return float(marker.read_text() or 0.0)
    except (OSError, ValueError):
        return 0.0


def drawing(marker: Path, yield_s: float, started: float, now: float) -> bool:
    """Whether the dashboard is drawing at wall-clock time `now`: the marker's mtime + `yield_s` is
    later, and its hold began at or after `started` (the job's start: the script run that started
    the job, the Score page's submit, is not a page the user waits for)."""
    try:
        return marker.stat().st_mtime + yield_s > now and hold_began(marker) >= started
    except OSError:
        return False


@dataclass
class PauseRule:
    """One job's pause decisions, one poll at a time (`step`): stop it when the dashboard draws,
    resume it when the drawing ends or after `max_pause_s`, then let it run `min_run_s` before
    the next pause."""

    max_pause_s: float = field(default_factory=max_pause_seconds)
    min_run_s: float = MIN_RUN_S
    paused_at: float | None = None
    """When the current pause began (None: running)."""
    paused_total: float = 0.0
    """The seconds paused so far, counting only finished pauses."""
    run_until: float = 0.0

    def step(self, now: float, busy: bool) -> Action | None:
        """The decision at monotonic time `now`, the dashboard drawing (`busy`) or not: "stop",
        "resume" or None (nothing to change)."""
        if self.paused_at is None and busy and now >= self.run_until:
            self.paused_at = now
            return "stop"
        if self.paused_at is not None and (not busy or now - self.paused_at >= self.max_pause_s):
            self.paused_total += now - self.paused_at
            self.paused_at, self.run_until = None, now + self.min_run_s
            return "resume"
        return None


class Child(Protocol):
    """What `supervise` uses of a `subprocess.Popen` (or of standby.ForkedChild)."""

    pid: int

    def wait(self, timeout: float | None = None) -> int: ...


def signal_group(pgid: int, signum: int) -> None:
    """Send `signum` to a process group (gone or not ours: nothing)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def supervise(child: Child, marker: Path, yield_s: float, ending: threading.Event,
              on_resume: Callable[[float], None] | None = None, *, rule: PauseRule | None = None,
              monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
              send: Callable[[int, int], None] = signal_group, poll_s: float = POLL_S) -> int:
    """Wait for `child`; while the dashboard draws (`marker`'s mtime + `yield_s` is in the future),
    keep its process group stopped as `rule` (a PauseRule) decides. Once `ending` is set (a
    forwarded SIGTERM), never stop it again. `on_resume(total paused seconds)` after each pause: the
    job panel says how long pages held the job. `monotonic`, `wall` and `send` (signals to the
    child's process group) are the clocks and the signals (a test passes fakes)."""
    if yield_s <= 0:
        return child.wait()
    rule = rule or PauseRule()
    # The script run that started this job (the Score page's submit) holds jobs too; that hold began
    # before the job and is not a page the user waits for: ignore it (and only it).
    started = wall()
    while True:
        try:
            return child.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        if ending.is_set():  # (the signal may have come between this check and a SIGSTOP below)
            send(child.pid, signal.SIGCONT)
            return child.wait()
        action = rule.step(monotonic(), drawing(marker, yield_s, started, wall()))
        if action == "stop":
            send(child.pid, signal.SIGSTOP)
        elif action == "resume":
            send(child.pid, signal.SIGCONT)
            if on_resume is not None:
                on_resume(rule.paused_total)
