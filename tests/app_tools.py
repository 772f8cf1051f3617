"""What the AppTest files share: the app opened on a workspace, a page switched to, a synthetic
workspace with token rows (tests/test_app.py, tests/test_displacement_views.py), and the metrics a page shows."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60


def synthetic_workspace(root: Path) -> str:
    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(root, n_pairs=60, n_checkpoints=3, seed=0, tokens=True)
    return str(root)


def open_app(monkeypatch, workspace: str) -> AppTest:
    monkeypatch.setenv("DID_WORKSPACE", workspace)
    monkeypatch.setenv("DID_AUTO_DEMO", "0")  # never start a demo build from a test
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict:
    return {m.label: m for m in at.metric}
