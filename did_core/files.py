"""Files written whole or not at all, and whether a writer's process still lives: the one atomic
writer of the project (the store, the jobs, the demo and the live runs all write through it).

Every file is written to a unique `.<name>.<pid>.<hex>.tmp` in the same directory, fsynced, then
`os.replace`d, so a reader never sees a half-written file and a `kill -9` leaves only a stray temp
file, whose dead pid tells `store.remove_orphaned_temps` it may go.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from did_core.errors import InputError

_FSYNC = True


@contextlib.contextmanager
def relaxed_durability() -> Iterator[None]:
    """Skip fsync inside this block (writes stay atomic; only power-loss durability is given up).

    For bulk builders of throwaway workspaces (synthetic_ws, benchmarks); fsync costs ~4 ms a file.
    """
    global _FSYNC
    old, _FSYNC = _FSYNC, False
    try:
        yield
    finally:
        _FSYNC = old


def temp_name(path: Path) -> Path:
    """The temp file `atomic_write_bytes` writes `path` through (its pid lets a cleaner tell it is orphaned)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a same-directory temp file, fsync, `os.replace`, then fsync the directory.

    A full disk becomes an `InputError` naming the path; the temp file is removed on any failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if _FSYNC:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"no space left on device while writing {path}") from e
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if not _FSYNC:
        return
    with contextlib.suppress(OSError):  # directory fsync is not supported everywhere
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists (another user's live process counts; None or 0 does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def read_json(path: Path) -> dict:
    """A JSON object from `path`; an InputError naming the file when it cannot be read or is not an object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: cannot read JSON ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object")
    return obj
