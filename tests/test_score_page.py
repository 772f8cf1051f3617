"""The Score page's form: built from run_settings.FIELDS, it submits no override unless the user fills a
field; bad input is refused before a job starts, next to the field at fault; a run name in use is
never replaced unless asked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from cli_world import build_world  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from did_core import run_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FLAGS = {f.flag for f in run_settings.FIELDS}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    w = build_world(tmp_path_factory.mktemp("world"), n_pairs=8)
    # what TRL writes, as JSON here: β 0.37, max length 64
    (w["run"] / "training_args.json").write_text(json.dumps({"beta": 0.37, "max_length": 64, "bf16": True}))
    return w


@pytest.fixture()
def page(monkeypatch, tmp_path):
    """The Score page with jobs.start recorded instead of launched."""
    from did_ui import jobs

    started: list[list[str]] = []
    monkeypatch.setattr(jobs, "start", lambda root, argv, kind="score", cwd=None: started.append(argv) or "job-1")
    monkeypatch.setenv("DID_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/score.py").run()
    assert not at.exception
    return at, started


def _fill(at: AppTest, **values: str) -> None:
    inputs = {t.label: t for t in at.text_input}
    for label, value in values.items():
        inputs[label].set_value(value)


def test_untouched_settings_submit_no_override(page, world):
    at, started = page
    _fill(at, **{"…or a path on this machine": str(world["data"]), "Reference model (SFT)": str(world["ref"]),
                 "TRL output folder (checkpoint-* inside)": str(world["run"])})
    at.form_submit_button[0].click().run()
    assert not at.error, [e.value for e in at.error]
    [argv] = started
    assert not FLAGS & set(argv), argv  # β, max length, … are left to the trainer
    assert argv[argv.index("--numerics") + 1] == "auto"
    # the page shows what the job will use, with sources
    table = at.dataframe[-1].value.set_index("setting")
    assert table.loc["β", "value"] == "0.37" and table.loc["β", "source"] == "trainer"
    assert table.loc["max length", "value"] == "64" and table.loc["precision", "value"] == "bf16"
    assert table.loc["loss type", "source"] == "default"


def test_a_changed_field_is_the_only_override(page, world):
    at, started = page
    _fill(at, **{"…or a path on this machine": str(world["data"]), "Reference model (SFT)": str(world["ref"]),
                 "TRL output folder (checkpoint-* inside)": str(world["run"]), "β": "0.5"})
    at.form_submit_button[0].click().run()
    [argv] = started
    assert set(argv) & FLAGS == {"--beta"} and argv[argv.index("--beta") + 1] == "0.5"
    assert any("β 0.5 given; the trainer used 0.37" in w.value for w in at.warning)


@pytest.mark.parametrize("field, value, expect", [
    ("…or a path on this machine", "/nonexistent/prefs.jsonl", "Dataset: error: /nonexistent/prefs.jsonl"),
    ("Reference model (SFT)", "/nonexistent/model", "Reference model: error: /nonexistent/model"),
    ("TRL output folder (checkpoint-* inside)", "/nonexistent/run", "TRL output folder: error: /nonexistent/run"),
    ("β", "notanumber", "Run setting β: error: --beta must be a number"),
    ("max length", "-3", "Run settings: error: bad setting: max_length must be an integer >= 2"),
])
def test_bad_input_is_refused_before_a_job_starts(page, world, field, value, expect):
    at, started = page
    good = {"…or a path on this machine": str(world["data"]), "Reference model (SFT)": str(world["ref"]),
            "TRL output folder (checkpoint-* inside)": str(world["run"])}
    _fill(at, **(good | {field: value}))
    at.form_submit_button[0].click().run()
    assert started == []
    assert any(e.value.startswith(expect) for e in at.error), [e.value for e in at.error]
    # drawn next to the field at fault: right under its input, or under the run-settings expander
    leaves = _leaves(at.main)
    at_error = next(i for i, e in enumerate(leaves) if e.type == "error" and str(e.value).startswith(expect))
    before = leaves[at_error - 1]
    if field in {"β", "max length"}:
        assert before.label in SETTING_LABELS, before
    else:
        assert before.label == field, before


SETTING_LABELS = {run_settings.LABELS[f.name] for f in run_settings.FIELDS}


def _leaves(node) -> list:
    """The page's elements in the order drawn (blocks flattened)."""
    children = getattr(node, "children", None)
    if not children:
        return [node]
    return [leaf for child in children.values() for leaf in _leaves(child)]


def test_a_run_name_in_use_is_not_replaced_unless_asked(page, world, tmp_path):
    at, started = page
    ws = tmp_path / "ws"
    (ws / "runs" / "mine").mkdir(parents=True)
    manifest = ws / "runs" / "mine" / "run.json"
    manifest.write_text(json.dumps({"name": "mine"}))
    before = hashlib.sha256(manifest.read_bytes()).hexdigest()
    _fill(at, **{"…or a path on this machine": str(world["data"]), "Reference model (SFT)": str(world["ref"]),
                 "TRL output folder (checkpoint-* inside)": str(world["run"]), "Run name": "mine"})
    at.form_submit_button[0].click().run()
    assert started == [] and any("a run named 'mine' exists" in e.value for e in at.error)
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == before
    [box] = [c for c in at.checkbox if c.label == "Replace a run of this name"]
    box.check()
    at.form_submit_button[0].click().run()
    [argv] = started
    assert argv[argv.index("--name") + 1] == "mine"
