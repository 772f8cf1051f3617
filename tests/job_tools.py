"""Shared by tests/test_jobs.py and bench/job_pausing.py: a real job that counts, and how to read it."""

from __future__ import annotations

from pathlib import Path

COUNTER = ("import os, sys, time\n"
           "open(sys.argv[2], 'w').write(str(os.getpid()))\n"
           "n = 0\n"
           "while True:\n"
           "    n += 1\n"
           "    with open(sys.argv[1] + '.tmp', 'w') as f: f.write(str(n))\n"
           "    os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
           "    time.sleep(0.01)\n")
"""A command (`python -c COUNTER COUNT_FILE PID_FILE`) that counts up every 10 ms into COUNT_FILE,
having written its pid to PID_FILE first."""


def count(path: Path) -> int:
    """The counter's last value (0 before its first write)."""
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP: state T in /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"
