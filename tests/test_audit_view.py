"""The Runs page's tokenization audit (did_ui/audit_view.py), as AppTest draws it: a count per problem,
the demo's findings marked as by design, and a sentence for a run scored before audits were recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from did_core.token_audit import PROBLEMS, Audit, Problem  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    from cli_world import build_world

    from did_core.config import ScoreSettings
    from did_core.score import run_score
    from did_core.workspace import Workspace

    w = build_world(tmp_path_factory.mktemp("world"), n_pairs=6)
    root = tmp_path_factory.mktemp("ws")
    run_score(str(w["data"]), str(w["ref"]), run_dir=str(w["run"]), workspace=root, name="audited",
              settings=ScoreSettings(token_level=False))
    space = Workspace(root)
    manifest = space.run("audited")
    older = manifest.replace(name="older", extra={k: v for k, v in manifest.extra.items() if k != "audit"})
    space.write_run(older)
    # what score.py's manifest gains (did_core/score.py is not this module's; see token_audit.audit_for_manifest)
    first = space.dataset("audited")["pair_id"].astype(str).tolist()[0]
    audit = Audit(6, {k: Problem(0) for k in PROBLEMS} | {"truncated": Problem(1, (first,), 7, 1)})
    space.write_run(manifest.replace(extra=dict(manifest.extra) | {"audit": audit.to_dict()}))
    return root


def _runs_page(monkeypatch, root: Path, run: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DID_WORKSPACE", str(root))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    monkeypatch.setenv("DID_WARM_UP", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_runs_page_shows_the_audit(monkeypatch, ws):
    at = _runs_page(monkeypatch, ws, "audited")
    assert any(s.value == "Tokenization audit" for s in at.subheader)
    table = next(d.value for d in at.dataframe if "problem" in d.value.columns).set_index("problem")
    assert table.loc[PROBLEMS["truncated"], "pairs"] == 1 and table.loc[PROBLEMS["truncated"], "detail"] == "1 response, 7 tokens dropped"
    assert table.loc[PROBLEMS["empty_completion"], "pairs"] == 0
    assert at.selectbox(key="audit_problem").value == "truncated"
    assert not any("No tokenization audit" in i.value for i in at.info)


def test_the_demo_s_audit_says_its_findings_are_by_design(monkeypatch, ws):
    from did_core.workspace import Workspace

    space = Workspace(ws)
    m = space.run("audited")
    space.write_run(m.replace(name="demo-like", extra=dict(m.extra) | {"demo": True, "language": {"eos": ">"}}))
    at = _runs_page(monkeypatch, ws, "demo-like")
    assert any("This is the embedded demo" in c.value and "by design" in c.value for c in at.caption)
    assert not any("This is the embedded demo" in c.value for c in _runs_page(monkeypatch, ws, "audited").caption)


def test_runs_page_says_when_a_run_has_no_audit(monkeypatch, ws):
    at = _runs_page(monkeypatch, ws, "older")
    assert any(i.value == "No tokenization audit recorded for this run (rescore to get one)." for i in at.info)
