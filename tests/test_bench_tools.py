"""The load benchmark's CPU accounting (bench/load_test.py: watch_cpu): a process that burns a known
amount of CPU is counted in the group its command line names."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
load_test = pytest.importorskip("load_test")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_watch_cpu_counts_a_burning_process_in_its_group(monkeypatch):
    word = f"did-cpu-probe-{uuid.uuid4().hex}"  # no other process on the machine has it in its command line
    monkeypatch.setattr(load_test, "CPU_GROUPS", (("probe", (word,)),))
    totals: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=load_test.watch_cpu, args=(stop, totals))
    watcher.start()
    # Burns 1 s of CPU, then idles past the next sample (watch_cpu misses what a process does in its
    # last 0.5 s before it ends, as its docstring says).
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\ntime.sleep(0.8)"
    subprocess.run([sys.executable, "-c", burn, word], check=True)
    stop.set()
    watcher.join()
    assert 0.9 <= totals.get("probe", 0.0) <= 1.3, totals  # 1 s of burning plus the interpreter's start
