"""The argv the Score page hands to a job (did_ui/job_argv.py): a list, never a shell line."""

from __future__ import annotations

import pytest

from did_ui import job_argv


def test_score_argv_is_a_list_without_a_shell():
    argv = job_argv.score_argv("d; rm -rf /", "ref model", workspace="/w", run_dir="/runs/x", overrides={"beta": 0.2},
                           limit=5)
    assert argv[1:4] == ["-m", "did_core", "score"] and "d; rm -rf /" in argv and "--run" in argv
    assert argv[argv.index("--beta") + 1] == "0.2" and argv[-1] == "--token-level"
    assert "--max-length" not in argv  # left to the trainer
    with pytest.raises(ValueError, match="not a run setting"):
        job_argv.score_argv("d", "r", workspace="/w", run_dir="/x", overrides={"learning_rate": 1.0})
    with pytest.raises(ValueError):
        job_argv.score_argv("d", "r", workspace="/w")
