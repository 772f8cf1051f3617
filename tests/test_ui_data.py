"""did_ui/data.py (the dashboard's cached reads; did_core/data.py is tests/test_data.py): views are keyed
by their own run's version."""

from __future__ import annotations

import time


def test_rescoring_one_run_leaves_the_other_runs_cached(tmp_path):
    """Views are keyed by their own run's version: a job rewriting run B changes B's token only, so
    A's cached tables stay valid while B's are read afresh."""
    from did_core.synthetic_ws import make_synthetic_workspace
    from did_core.workspace import Workspace
    from did_ui import data

    root = str(tmp_path / "ws")
    for name, seed in (("a", 0), ("b", 1)):
        make_synthetic_workspace(root, n_pairs=20, n_checkpoints=2, seed=seed, tokens=False, run_name=name)
    before = {r: data.run_version(root, r) for r in ("a", "b")}
    listing = data.version(root)
    time.sleep(0.01)
    ws = Workspace(root)
    ws.write_run(ws.run("b").replace(beta=0.3))
    assert data.run_version(root, "a") == before["a"]
    assert data.run_version(root, "b") != before["b"]
    assert data.version(root) != listing  # the run list is re-read too
    assert data.run_version(root, "missing") == "none"
