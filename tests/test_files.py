"""The one atomic writer: a failed write leaves the old file and no temp file; a full disk is one error line."""

from __future__ import annotations

import os

import pytest

from did_core.errors import InputError
from did_core.files import atomic_write_bytes, pid_alive, read_json


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_bytes(path, b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(InputError, match="no space left"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]  # no stray temp file


def test_pid_alive_tells_a_live_process_from_a_finished_one():
    import subprocess
    import sys

    assert pid_alive(os.getpid()) and not pid_alive(None) and not pid_alive(0)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_read_json_names_the_file_it_cannot_read(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "ok.json") == {"a": 1}
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "bad.json").write_text("{")
    for name, why in (("list.json", "expected a JSON object"), ("bad.json", "cannot read JSON"), ("none.json", "cannot read")):
        with pytest.raises(InputError, match=why) as e:
            read_json(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)
