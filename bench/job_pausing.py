"""How fast a real background job yields to the dashboard (did_ui/pausing.py), on this machine.

A job (a command that counts every 10 ms) runs through did_ui.jobs as the Score page starts one;
this script plays page runs with `pausing.Holds().foreground` and watches the command's process
state in /proc: how long after a page starts the command is stopped (the wrapper polls every
POLL_S), how long after the page ends it runs again (DID_JOB_YIELD_S, plus a poll), whether it
counted while stopped, and, under pages without a break, the share of the time it still ran
(max pause, then MIN_RUN_S). tests/test_jobs.py asserts the decisions in fake time; these are the
times they take for real, which depend on how busy the cores are, so they are printed, not asserted.

    python bench/job_pausing.py [--rounds 10] [--yield-s 0.5] [--page-s 0.3] [--max-pause-s 1.0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from job_tools import COUNTER, count, stopped  # noqa: E402

from did_ui import jobs, pausing  # noqa: E402


def until(cond, timeout: float = 30.0) -> float:
    """Seconds until `cond()` holds (polled every 2 ms)."""
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit("timed out")
        time.sleep(0.002)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--yield-s", type=float, default=0.5)
    ap.add_argument("--page-s", type=float, default=0.3, help="how long each page run lasts")
    ap.add_argument("--max-pause-s", type=float, default=1.0)
    ap.add_argument("--busy-s", type=float, default=6.0, help="pages without a break, this long")
    a = ap.parse_args(argv)
    if not Path("/proc/self/stat").exists():
        raise SystemExit("reads /proc (Linux)")
    os.environ.update({"DID_JOB_YIELD_S": str(a.yield_s), "DID_JOB_MAX_PAUSE_S": str(a.max_pause_s), "DID_STANDBY": "0"})
    ws = Path(tempfile.mkdtemp(prefix="did-pausing-"))
    counter, pid_file = ws / "count", ws / "pid"
    job = jobs.start(ws, [sys.executable, "-c", COUNTER, str(counter), str(pid_file)])
    until(lambda: count(counter) > 5)
    pid = int(pid_file.read_text())
    holds = pausing.Holds()
    stop_s, resume_s, counted = [], [], 0
    try:
        for _ in range(a.rounds):
            with holds.foreground(ws):
                stop_s.append(until(lambda: stopped(pid)))
                n = count(counter)
                time.sleep(a.page_s)
                counted += count(counter) - n
            resume_s.append(until(lambda: not stopped(pid)))
            time.sleep(pausing.MIN_RUN_S + 0.2)  # after a pause a job runs MIN_RUN_S before the next one
        ran = polls = 0
        with holds.foreground(ws):
            end = time.perf_counter() + a.busy_s
            while time.perf_counter() < end:
                polls += 1
                ran += not stopped(pid)
                time.sleep(0.01)
    finally:
        jobs.cancel(ws, job)

    def ms(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms"

    print(f"{a.rounds} page runs of {a.page_s} s, DID_JOB_YIELD_S {a.yield_s}, poll {pausing.POLL_S * 1000:.0f} ms")
    print(f"  stopped after the page began:   {ms(stop_s)}")
    print(f"  running again after it ended:   {ms(resume_s)} (yield_s {a.yield_s * 1000:.0f} ms + up to one poll)")
    print(f"  counts while stopped:           {counted}")
    print(f"{a.busy_s} s of pages without a break, max pause {a.max_pause_s} s then {pausing.MIN_RUN_S} s of running:")
    print(f"  share of the time it ran:       {ran / max(1, polls):.2f} "
          f"(expected {pausing.MIN_RUN_S / (pausing.MIN_RUN_S + a.max_pause_s):.2f})")
    print(f"  paused in all (the job panel):  {jobs.info(ws, job).paused_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
