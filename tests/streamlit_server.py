"""Start `streamlit run app.py` on a workspace for browser tests and the load benchmark.

Only the flags a test needs are given on the command line; everything else (the listening address
included, unless `address` is passed) comes from .streamlit/config.toml, so tests see what users get.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(workspace: str | Path, port: int | None = None, address: str | None = None,
          env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[str]:
    """Yield the server's URL (http://127.0.0.1:PORT) once /_stcore/health answers; stop it after."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    if address is not None:
        cmd += ["--server.address", address]
    full_env = {**os.environ, "DID_WORKSPACE": str(workspace), "DID_AUTO_DEMO": "0", **(env or {})}
    log = tempfile.NamedTemporaryFile("w+", prefix="streamlit-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"streamlit did not start:\n{log.read()[-3000:]}") from None
                time.sleep(0.25)
        serve.pid = proc.pid  # type: ignore[attr-defined]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)
