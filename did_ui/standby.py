"""A warm process for the dashboard's jobs: a job started from a page does not wait for Python to
import torch and transformers.

A fresh `python -m did_core score …` spends its first ~5 s importing torch and transformers (5.2 s on
two idle cores here, more while the dashboard draws on the same cores: bench/job_throughput.py). When
the Score page opens, `ensure(workspace)` starts one standby (`python -m did_ui.standby serve
WORKSPACE`) that imports what `python -m did_core` needs and waits. `take(…)` hands it the next job:
the standby becomes that job's wrapper (`jobs.wrap`: the log, pauses, signals, rc) and runs the
command in a forked child exactly as `python -m did_core ARGV` would (a process group of its own,
the job's environment, stdout and stderr to the log), so the job's numbers and files are the same.
The next `ensure` starts a new standby. An idle standby exits after IDLE_S, when the server that
started it has gone, or when its workspace has. `DID_STANDBY=0` turns it off: jobs then start as a
fresh process, as before.

The hand-over, in the workspace's jobs folder (`jobs/.standby/<pid>/`): `env.json` (the standby's
environment) and `ready` (it waits); a taker claims it by renaming `ready` to `taken` (atomic: two
sessions never get the same standby), then writes `job` (the job folder); the standby polls for it.
A job whose environment differs from the standby's (beyond its progress file) starts fresh.
No streamlit import here: the standby runs without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from did_core.files import atomic_write_text, pid_alive

IDLE_S = 600.0  # an unused standby gives its memory back after this long
POLL_S = 0.05  # how often a waiting standby looks for its job: the hand-over's latency
CLAIM_WAIT_S = 10.0  # a claim whose `job` file never comes (its taker died) is given up after this
# Variables a library writes into its own process's environment, a default it derives the same way in
# any process (torch's inductor sets its cache folder when first asked): a server that has run that
# code has them and a fresh standby does not, which changes nothing the standby imported.
SELF_SET_KEYS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
_spawned: dict[str, subprocess.Popen] = {}  # this server's standbys, reaped when they end


def enabled() -> bool:
    return os.environ.get("DID_STANDBY", "1").strip().lower() not in ("0", "false", "no", "off")


def _root(workspace: str | Path) -> Path:
    return Path(workspace) / "jobs" / ".standby"


def _waiting(workspace: str | Path) -> list[Path]:
    """Standby folders whose process is alive and waiting (stale folders are removed on the way)."""
    out = []
    root = _root(workspace)
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.name.isdigit():
            continue
        if not pid_alive(int(d.name)):
            shutil.rmtree(d, ignore_errors=True)
        elif (d / "ready").exists():
            out.append(d)
    return out


def _starting(workspace: str | Path) -> bool:
    for key, proc in list(_spawned.items()):
        if proc.poll() is not None:
            del _spawned[key]
    return any(k.startswith(f"{Path(workspace).resolve()}|") for k in _spawned)


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a job's wrapper gets: this process's, unbuffered, with the repository importable."""
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)} | (extra or {})


def ensure(workspace: str | Path) -> None:
    """Start a standby for `workspace` unless one is waiting or starting (or DID_STANDBY=0)."""
    if not enabled() or _starting(workspace) or _waiting(workspace):
        return
    _root(workspace).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "did_ui.standby", "serve", str(Path(workspace).resolve())],
                            cwd=str(Path(__file__).resolve().parent.parent), env=job_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _spawned[f"{Path(workspace).resolve()}|{proc.pid}"] = proc


def _env_differences(theirs: dict[str, str], env: dict[str, str]) -> list[str]:
    """The variables that differ between a standby's environment and a job's, except a library's
    self-set default missing on one side (`SELF_SET_KEYS`)."""
    return sorted(k for k in set(theirs) | set(env)
                  if theirs.get(k) != env.get(k)
                  and not (k in SELF_SET_KEYS and (k not in theirs or k not in env)))


def take(workspace: str | Path, job_dir: Path, argv: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    """Hand the job in `job_dir` to a waiting standby: (its pid, the job's wrapper; ""), or (None, why
    no standby can run it: off, none waiting, another command than `python -m did_core`, another
    environment), which the job panel shows."""
    if not enabled():
        return None, "the warm process is off (DID_STANDBY=0)"
    if argv[:3] != [sys.executable, "-m", "did_core"]:
        return None, "not a `python -m did_core` command"
    why = "no warm process was ready yet"
    for d in _waiting(workspace):
        try:
            theirs = json.loads((d / "env.json").read_text())
        except (OSError, ValueError):
            continue
        if diff := _env_differences(theirs, env):
            why = f"the warm process's environment differs ({', '.join(diff[:3])})"
            continue
        try:
            os.rename(d / "ready", d / "taken")  # the claim: only one taker succeeds
        except OSError:
            continue
        atomic_write_text(d / "job", json.dumps({"dir": str(job_dir), "env": env}))
        return int(d.name), ""
    return None, why


# -- the standby process ---------------------------------------------------------------------------------
def _preload() -> None:
    """What `python -m did_core score|sample|demo|export` imports before its first line of work (after
    the OpenMP setting that the CLI makes before torch loads: libgomp reads it once, at load)."""
    from did_core.__main__ import OMP_WAIT_POLICY

    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (lazy modules: load them now)

    import did_core.export  # noqa: F401
    import did_core.sample_job  # noqa: F401
    import did_core.score  # noqa: F401


class ForkedChild:
    """A forked command, with the part of `subprocess.Popen`'s interface `jobs.wrap` uses."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(min(0.01, timeout))
        return self.returncode  # type: ignore[return-value]


def fork_launcher(env: dict[str, str]):
    """A `launch(argv, log, preexec)` for `jobs.wrap` that forks this (preloaded) process and runs
    `python -m did_core ARGV` in the child, as a fresh interpreter would."""

    def launch(argv: list[str], log, preexec) -> ForkedChild:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return ForkedChild(pid)
        code = 1
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            os.environ.clear()
            os.environ.update(env)
            preexec()
            from did_core.__main__ import main

            sys.argv = [str(Path(main.__code__.co_filename)), *argv[3:]]  # as `python -m did_core` sets it
            try:
                code = main(argv[3:])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 — the child must end here, never return into the standby
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    return launch


def serve(workspace: Path) -> int:
    """The standby: preload, say `ready`, wait for a job (or give up), run it as its wrapper."""
    from did_ui import jobs

    parent, spawned_env = os.getppid(), dict(os.environ)
    _preload()
    d = _root(workspace) / str(os.getpid())
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "env.json", json.dumps(spawned_env))
    atomic_write_text(d / "ready", "")
    since, claimed = time.monotonic(), None
    while True:
        time.sleep(POLL_S)
        if (d / "job").exists():
            break
        now = time.monotonic()
        if (d / "taken").exists():
            claimed = claimed or now
            if now - claimed > CLAIM_WAIT_S:
                return _leave(d)
            continue
        gone = os.getppid() != parent or not Path(workspace).is_dir() or not (d / "ready").exists()
        if gone or now - since > IDLE_S:  # its server or workspace is gone, its folder cleared, or idle
            try:
                os.rename(d / "ready", d / "leaving")  # nobody can claim it now
            except OSError:
                if (d / "taken").exists():
                    continue  # claimed in that instant: wait for the job
            return _leave(d)
    job = json.loads((d / "job").read_text())
    shutil.rmtree(d, ignore_errors=True)
    return jobs.wrap(Path(job["dir"]), launch=fork_launcher(job["env"]))


def _leave(d: Path) -> int:
    shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2])))
    sys.exit("usage: python -m did_ui.standby serve WORKSPACE")
