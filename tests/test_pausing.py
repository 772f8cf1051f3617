"""Background jobs pause while the dashboard draws a page (did_ui/pausing.py: `Holds.foreground`,
`PauseRule`, `supervise`), never for good: a run of pages without a break slows a job, a cancel
still stops it, and a job whose wrapper dies while it is paused does not stay stopped.

The pause decisions are driven step by step in fake time (a fake child, fake clocks, recorded
signals): each test asserts the sequence of stops and resumes and when they fall, so none depends
on how busy the machine's cores are. One end-to-end test runs real jobs and asserts only the order
of events (the command stopped, running again, cancelled, ended). How fast a real job stops and
resumes on this machine is `python bench/job_pausing.py`'s output, not an assertion.
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
from pathlib import Path

import pytest
from job_tools import COUNTER, count, stopped

from did_core.files import pid_alive
from did_ui import jobs, pausing

T0 = 1_000_000.0  # the fake clocks' start (seconds)
POLL = pausing.POLL_S


class FakeTime:
    """One clock for the wall and the monotonic time, which advances only when the fake child waits;
    `at(t, fn)` runs `fn` when the clock reaches `t` (a page starting or ending)."""

    def __init__(self) -> None:
        self.now = T0
        self.events: list[tuple[float, object]] = []

    def __call__(self) -> float:
        return self.now

    def at(self, t: float, fn) -> None:
        self.events.append((T0 + t, fn))
        self.events.sort(key=lambda e: e[0])

    def advance(self, dt: float) -> None:
        end = self.now + dt
        while self.events and self.events[0][0] <= end:
            when, fn = self.events.pop(0)
            self.now = max(self.now, when)
            fn()
        self.now = end


class FakeChild:
    """A command that ends at fake time `ends_at` (seconds after T0); `wait(timeout)` lets the clock
    run `timeout` seconds, as a real wait would."""

    pid = 4242

    def __init__(self, clock: FakeTime, ends_at: float) -> None:
        self.clock, self.ends_at = clock, T0 + ends_at
        self.waited_forever = False

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            self.waited_forever = True
            return 0
        self.clock.advance(timeout)
        if self.clock.now >= self.ends_at:
            return 0
        raise subprocess.TimeoutExpired("fake", timeout)


class World:
    """A workspace with a jobs folder, one server's `Holds`, and a supervised fake child, all on one fake clock."""

    def __init__(self, tmp_path: Path, ends_at: float = 30.0) -> None:
        (tmp_path / "jobs").mkdir(exist_ok=True)
        self.ws = tmp_path
        self.clock = FakeTime()
        self.holds = pausing.Holds(clock=self.clock)
        self.child = FakeChild(self.clock, ends_at)
        self.signals: list[tuple[float, str]] = []
        self.resumed: list[float] = []
        self.ending = threading.Event()

    def page(self, start: float, end: float, settle_s: float = 0.0) -> None:
        """A script run of the dashboard from `start` to `end` (fake seconds after T0)."""
        stack = contextlib.ExitStack()
        self.clock.at(start, lambda: stack.enter_context(self.holds.foreground(self.ws, settle_s)))
        self.clock.at(end, stack.close)

    def send(self, pid: int, signum: int) -> None:
        assert pid == self.child.pid
        self.signals.append((round(self.clock.now - T0, 6), signal.Signals(signum).name))

    def supervise(self, yield_s: float, max_pause_s: float = 5.0) -> int:
        return pausing.supervise(self.child, self.ws / "jobs" / pausing.DRAWING, yield_s, self.ending,
                                 on_resume=self.resumed.append, rule=pausing.PauseRule(max_pause_s=max_pause_s),
                                 monotonic=self.clock, wall=self.clock, send=self.send)

    def pauses(self) -> list[tuple[float, float]]:
        """(stopped at, resumed at) for each pause, from the signals sent (they alternate)."""
        names = [name for _, name in self.signals]
        assert names == ["SIGSTOP", "SIGCONT"] * (len(names) // 2), names
        times = [t for t, _ in self.signals]
        return list(zip(times[::2], times[1::2], strict=True))


def test_a_job_pauses_while_a_page_is_drawn_and_resumes_after(tmp_path):
    """Stopped within one poll of the page's start, held through the page and yield_s after its end
    (the browser draws then), resumed within one poll of that; the panel is told the time held."""
    w = World(tmp_path, ends_at=10.0)
    w.page(start=1.0, end=1.9)
    assert w.supervise(yield_s=2.0) == 0
    [(stopped, resumed)] = w.pauses()
    assert 1.0 <= stopped <= 1.0 + POLL + 1e-6, "the job ran while a page was being computed"
    assert 1.9 + 2.0 <= resumed <= 1.9 + 2.0 + POLL + 1e-6, "the job ran within yield_s of the page's end"
    # the panel says how long pages held it: the page (0.9 s) and yield_s after it (2 s)
    assert w.resumed == [pytest.approx(resumed - stopped)]
    assert 2.0 <= w.resumed[0] <= 5.0


def test_the_run_that_starts_a_job_does_not_pause_it(tmp_path):
    """The Score page's submit starts the job inside its own script run: that hold began before the
    job and is ignored (the job scores while the page finishes); the next page's run pauses it."""
    w = World(tmp_path, ends_at=10.0)
    submit = contextlib.ExitStack()
    submit.enter_context(w.holds.foreground(w.ws))  # the submit, at T0
    w.clock.now += 0.01  # the job starts inside it
    w.clock.at(0.5, submit.close)  # the submit's run ends
    w.page(start=4.0, end=4.5)  # a later click
    w.supervise(yield_s=2.0)
    [(stopped, resumed)] = w.pauses()
    assert stopped >= 4.0, "the job was paused by the run that started it (or just after it)"
    assert stopped <= 4.0 + POLL + 1e-6, "a later page did not pause the job"
    assert resumed >= 4.5 + 2.0
    assert w.resumed == [pytest.approx(resumed - stopped)]  # held only by the later page


def test_yield_zero_never_pauses(tmp_path):
    w = World(tmp_path, ends_at=3.0)
    w.page(start=0.5, end=2.0)
    assert w.supervise(yield_s=0.0) == 0
    assert w.signals == [] and w.child.waited_forever  # a plain wait: no polling at all


def test_pages_without_a_break_slow_a_job_but_cannot_stall_it(tmp_path):
    """Paused at most max_pause_s (DID_JOB_MAX_PAUSE_S) at a time, then it runs MIN_RUN_S (1 s)
    whatever the pages do; once the pages stop it resumes after yield_s."""
    w = World(tmp_path, ends_at=12.0)
    w.page(start=0.5, end=8.0)  # one script run after another, no break
    w.supervise(yield_s=0.3, max_pause_s=0.5)
    pauses = w.pauses()
    assert len(pauses) >= 4
    assert 0.5 <= pauses[0][0] <= 0.5 + POLL + 1e-6
    for stop_at, resumed in pauses:
        held = resumed - stop_at
        assert held <= 0.5 + POLL + 1e-6, "a page held the job longer than MAX_PAUSE_S"
        if resumed < 8.0:  # while the pages last, each pause is MAX_PAUSE_S
            assert held == pytest.approx(0.5, abs=POLL + 1e-6)
    for (_, resumed), (stop_at, _) in zip(pauses, pauses[1:], strict=False):
        assert stop_at - resumed == pytest.approx(pausing.MIN_RUN_S, abs=POLL + 1e-6), "it did not run MIN_RUN_S"
    assert pauses[-1][1] <= 8.0 + 0.3 + POLL + 1e-6  # the last pause ends with the pages (+ yield_s)
    assert len(w.resumed) == len(pauses) and w.resumed == sorted(w.resumed)  # a running total


def test_cancel_stops_a_paused_job(tmp_path):
    """A forwarded SIGTERM (`ending`) during a pause: the command gets SIGCONT at the next poll, so it
    can act on the signal, and is never stopped again."""
    w = World(tmp_path, ends_at=60.0)
    w.page(start=0.5, end=50.0)
    w.clock.at(2.0, w.ending.set)  # Cancel, while the job is paused
    assert w.supervise(yield_s=30.0, max_pause_s=30.0) == 0
    assert [name for _, name in w.signals] == ["SIGSTOP", "SIGCONT"]
    assert 2.0 <= w.signals[-1][0] <= 2.0 + POLL + 1e-6
    assert w.child.waited_forever  # then it waits for the command to end, with no more pauses


def test_foreground_holds_jobs_until_the_last_concurrent_run_ends(tmp_path):
    (tmp_path / "jobs").mkdir()
    marker = tmp_path / "jobs" / pausing.DRAWING
    clock = FakeTime()
    holds = pausing.Holds(clock=clock)
    with holds.foreground(tmp_path):
        assert marker.stat().st_mtime == pytest.approx(T0 + pausing.HOLD_S)  # in the future while a run lasts
        assert pausing.hold_began(marker) == T0
        clock.now += 1.0
        with holds.foreground(tmp_path):
            assert pausing.hold_began(marker) == T0  # a run within another's hold does not restart it
            clock.now += 1.0
        assert holds.runs == 1
        assert marker.stat().st_mtime >= T0 + pausing.HOLD_S, "one run ending released jobs while another ran"
        clock.now += 1.0
    assert holds.runs == 0
    assert marker.stat().st_mtime == pytest.approx(T0 + 3.0)


def test_foreground_makes_no_folder_in_a_workspace_without_jobs(tmp_path):
    with pausing.Holds().foreground(tmp_path / "ws"):
        pass
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(("value", "want"), [("0", 0.0), ("2.5", 2.5), ("-1", 0.0)])
def test_yield_seconds_from_the_environment(monkeypatch, value, want):
    monkeypatch.setenv("DID_JOB_YIELD_S", value)
    assert pausing.yield_seconds() == want


def test_yield_seconds_default_depends_on_a_gpu(monkeypatch):
    monkeypatch.delenv("DID_JOB_YIELD_S", raising=False)
    assert pausing.yield_seconds() == (0.0 if Path("/dev/nvidiactl").exists() else 1.0)


@pytest.mark.parametrize(("value", "want"), [(None, pausing.MAX_PAUSE_S), ("0.5", 0.5), ("junk", pausing.MAX_PAUSE_S)])
def test_max_pause_from_the_environment(set_env, value, want):
    set_env("DID_JOB_MAX_PAUSE_S", value)
    assert pausing.max_pause_seconds() == want
    assert pausing.PauseRule().max_pause_s == want


def test_every_script_run_of_the_dashboard_holds_jobs(tmp_path, monkeypatch):
    """app.py wraps each page's run in `HOLDS.foreground`: after a run the marker holds the run's end time."""
    from streamlit.testing.v1 import AppTest

    (tmp_path / "jobs").mkdir()
    monkeypatch.setenv("DID_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    before = time.time()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    mtime = (tmp_path / "jobs" / pausing.DRAWING).stat().st_mtime
    assert before - 1 <= mtime <= time.time() + 1
    assert pausing.pages_running() == 0


def test_a_page_load_holds_jobs_longer_and_a_later_click_does_not_cut_it_short(tmp_path):
    (tmp_path / "jobs").mkdir()
    marker = tmp_path / "jobs" / pausing.DRAWING
    clock = FakeTime()
    holds = pausing.Holds(clock=clock)
    with holds.foreground(tmp_path, settle_s=5.0):
        clock.now += 0.5
    end = clock.now
    assert marker.stat().st_mtime == pytest.approx(end + 5.0)
    clock.now += 0.5
    with holds.foreground(tmp_path):  # a click right after: its own end is earlier
        clock.now += 0.5
    assert marker.stat().st_mtime == pytest.approx(end + 5.0)


# --- end to end: real jobs, only the order of events --------------------------------------------

def _wait_for(cond, what: str, timeout: float = 60.0) -> None:
    """Wait for an event; the timeout only turns a hang into a failure (no assertion on time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not hasattr(os, "killpg") or not Path("/proc/self/stat").exists(),
                    reason="POSIX process groups, Linux /proc")
def test_real_jobs_pause_resume_cancel_and_outlive_a_killed_wrapper_in_order(tmp_path, monkeypatch):
    """Two real jobs: a page stops both; after it they run again and say how long they were held;
    paused again, Cancel ends one (the wrapper wakes it to act on SIGTERM), and kill -9 of the other's
    wrapper orphans its stopped process group, which the kernel sends SIGHUP and SIGCONT, so no stopped
    process is left behind and the job reads as interrupted."""
    monkeypatch.setenv("DID_JOB_YIELD_S", "0.2")
    monkeypatch.setenv("DID_JOB_MAX_PAUSE_S", "600")  # a pause lasts as long as the page here
    monkeypatch.setenv("DID_STANDBY", "0")
    holds = pausing.Holds()  # this test's own server: no page of another test holds these jobs
    started = {}
    for name in ("a", "b"):
        counter, pid_file = tmp_path / f"count-{name}", tmp_path / f"pid-{name}"
        job_id = jobs.start(tmp_path, [sys.executable, "-c", COUNTER, str(counter), str(pid_file)])
        _wait_for(lambda c=counter: count(c) > 5, f"job {name} to start counting")
        started[name] = (job_id, counter, int(pid_file.read_text()))
    children = [pid for _, _, pid in started.values()]

    with holds.foreground(tmp_path):  # 1. a page: every running job stops
        _wait_for(lambda: all(stopped(p) for p in children), "the jobs to stop for the page")
        frozen = {name: count(c) for name, (_, c, _) in started.items()}
        assert all(stopped(p) for p in children)
        assert {name: count(c) for name, (_, c, _) in started.items()} == frozen
    # 2. after the page (and yield_s) they run again, and the panel says they were held
    for name, (job_id, counter, pid) in started.items():
        _wait_for(lambda p=pid: not stopped(p), f"job {name} to resume")
        _wait_for(lambda c=counter, n=frozen[name]: count(c) > n, f"job {name} to count again")
        _wait_for(lambda j=job_id: jobs.info(tmp_path, j).paused_s > 0, f"job {name}'s held time")
        assert jobs.info(tmp_path, job_id).status == "running"

    with holds.foreground(tmp_path):  # 3. paused again
        _wait_for(lambda: all(stopped(p) for p in children), "the jobs to stop again")
        (a, _, a_pid), (b, _, b_pid) = started["a"], started["b"]
        assert jobs.cancel(tmp_path, a)
        _wait_for(lambda: jobs.info(tmp_path, a).status == "cancelled", "the cancel of a paused job")
        _wait_for(lambda: not pid_alive(a_pid), "the cancelled command to exit")
        wrapper = json.loads((jobs.jobs_dir(tmp_path) / b / "job.json").read_text())["pid"]
        assert stopped(b_pid)
        os.kill(wrapper, signal.SIGKILL)
        _wait_for(lambda: not pid_alive(b_pid), "the orphaned command to exit")
    _wait_for(lambda: jobs.info(tmp_path, b).status == "interrupted", "the killed wrapper's job to read interrupted")
