"""AppTest: every page renders on a synthetic workspace and on an empty one; the key interactions
(choosing checkpoints, a deep link, selection → example) work."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from did_ui import selection  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["runs", "curves", "margins", "entropy", "compare", "example", "score", "lab"]
TIMEOUT = 60


@pytest.fixture(scope="module")
def synthetic_ws(tmp_path_factory) -> str:
    from did_core.synthetic_ws import make_synthetic_workspace

    root = tmp_path_factory.mktemp("ws")
    make_synthetic_workspace(root, n_pairs=60, n_checkpoints=3, seed=0, tokens=True)
    return str(root)


def _app(monkeypatch, workspace: str) -> AppTest:
    monkeypatch.setenv("DID_WORKSPACE", workspace)
    monkeypatch.setenv("DID_AUTO_DEMO", "0")  # never start a demo build from a test
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    return at


def _open(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_every_page_renders_on_a_synthetic_workspace(monkeypatch, synthetic_ws):
    at = _app(monkeypatch, synthetic_ws)
    for page in PAGES:
        _open(at, page)
        assert at.title, page
        assert not at.error, (page, [e.value for e in at.error])
    assert at.query_params["run"] == "synthetic"


def test_every_page_renders_on_an_empty_workspace(monkeypatch, tmp_path):
    at = _app(monkeypatch, str(tmp_path / "empty"))
    for page in PAGES:
        _open(at, page)
    _open(at, "runs")
    text = " ".join(m.value for m in [*at.markdown, *at.info, *at.subheader])
    assert "no runs" in text.lower()
    _open(at, "margins")
    assert any("No scored runs" in i.value for i in at.info)


def test_choosing_checkpoints_updates_the_view_and_the_url(monkeypatch, synthetic_ws):
    at = _open(_app(monkeypatch, synthetic_ws), "compare")
    a, b = at.sidebar.selectbox(key="pick_a"), at.sidebar.selectbox(key="pick_ckpt")
    assert a.options == ["checkpoint-100", "checkpoint-200", "checkpoint-300"]
    assert (a.value, b.value) == ("checkpoint-100", "checkpoint-300")  # first → last by default
    b.set_value("checkpoint-200").run()
    at.sidebar.selectbox(key="pick_a").set_value("checkpoint-300").run()
    assert not at.exception
    assert at.query_params["ckpt"] == "checkpoint-200" and at.query_params["a"] == "checkpoint-300"
    assert any("A = checkpoint\\-300 → B = checkpoint\\-200" in s.value for s in at.subheader)  # names as literal text
    _open(at, "margins")  # the choice follows to other pages
    assert at.sidebar.selectbox(key="pick_ckpt").value == "checkpoint-200"


def test_deep_link_opens_the_example(monkeypatch, synthetic_ws):
    at = _app(monkeypatch, synthetic_ws)
    at.query_params.update({"run": "synthetic", "example": "17", "ckpt": "checkpoint-200"})
    _open(at, "example")
    assert at.text_input[0].value == "17"
    assert at.sidebar.selectbox(key="pick_ckpt").value == "checkpoint-200"
    assert any("pair 17 " in c.value for c in at.caption)
    html = " ".join(h.proto.body for h in at.get("html"))
    assert "<span title=" in html and "log_ratio" in html
    next(b for b in at.button if b.label == "Next").click().run()
    assert not at.exception and at.query_params["example"] == "18" and at.text_input[0].value == "18"
    at.text_input[0].set_value("42").run()
    assert at.query_params["example"] == "42"


def test_forged_deep_link_falls_back_to_a_default_view(monkeypatch, synthetic_ws):
    at = _app(monkeypatch, synthetic_ws)
    at.query_params.update({"run": "../../etc", "example": "<script>", "ckpt": "nope"})
    _open(at, "example")
    assert at.query_params["run"] == "synthetic"
    assert at.sidebar.selectbox(key="pick_ckpt").value == "checkpoint-300"
    assert at.text_input[0].value == "0"  # the first pair, not the forged id


def test_selection_event_to_example_id():
    event = {"selection": {"points": [{"curve_number": 0, "point_index": 3, "x": 1.0, "y": 2.0, "customdata": ["17"]},
                                      {"customdata": ["17"]}, {"customdata": ["4"]}],
                           "point_indices": [3], "box": [], "lasso": []}}
    assert selection.pair_ids_from_selection(event) == ["17", "4"]
    assert selection.pair_id_from_selection(event) == "17"
    assert selection.pair_id_from_selection(event, valid_ids={"4"}) == "4"
    assert selection.pair_id_from_selection({"selection": {"points": []}}) is None
    assert selection.pair_id_from_selection(None) is None
    assert selection.pair_id_from_selection({"selection": {"points": [{"customdata": 5}]}}) == "5"


def test_query_params_round_trip():
    runs = ["a", "b"]
    ckpts = {"a": ["checkpoint-1", "checkpoint-2"], "b": ["checkpoint-9"]}
    state = selection.resolve_state({"run": "b", "example": "3"}, {}, runs, ckpts.__getitem__, lambda r: {"3"})
    assert state == selection.ViewState(run="b", ckpt="checkpoint-9", a="checkpoint-9", example="3")
    assert selection.to_query_params(state) == {"run": "b", "ckpt": "checkpoint-9", "a": "checkpoint-9", "example": "3"}
    remembered = selection.resolve_state({}, {"run": "a", "ckpt": "checkpoint-1"}, runs, ckpts.__getitem__)
    assert (remembered.run, remembered.ckpt, remembered.a) == ("a", "checkpoint-1", "checkpoint-1")
    forged = selection.resolve_state({"run": "../x", "ckpt": ["x", "checkpoint-1"]}, {}, runs, ckpts.__getitem__,
                                     lambda r: set())
    assert (forged.run, forged.ckpt) == ("a", "checkpoint-1")


def test_score_form_starts_a_background_job_and_shows_its_error(monkeypatch, tmp_path):
    import time

    from did_ui import jobs

    at = _open(_app(monkeypatch, str(tmp_path)), "score")
    inputs = {t.label: t for t in at.text_input}
    inputs["…or a path on this machine"].set_value(str(tmp_path / "missing.jsonl"))
    inputs["Reference model (SFT)"].set_value(str(tmp_path / "no-model"))
    at.text_area[0].set_value(str(tmp_path / "no-checkpoint"))
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert any("Started job" in s.value for s in at.success)
    [job] = jobs.list_jobs(tmp_path)
    assert job.argv[1:4] == ["-m", "did_core", "score"] and "--progress-json" in job.argv
    for _ in range(200):
        if jobs.info(tmp_path, job.id).status != "running":
            break
        time.sleep(0.1)
    at.run()
    assert any(t.value.startswith("error:") for t in at.get("text")) or any(
        e.value.startswith("error:") for e in at.error)


@pytest.mark.slow
def test_every_page_renders_on_the_demo_workspace(monkeypatch, demo_workspace):
    """The embedded demo (real TRL runs, exact DID tables), at the reduced test size unless
    DID_TEST_DEMO_WS names a full build."""
    at = _app(monkeypatch, demo_workspace)
    for run in ("demo-low", "demo-high"):
        at.query_params["run"] = run
        for page in PAGES:
            _open(at, page)
            assert not at.error, (run, page, [e.value for e in at.error])
        assert at.query_params["run"] == run
    _open(at, "entropy")
    assert any("whole response space" in s.value for s in at.subheader)  # the exact + K-sample estimators


def test_scatters_draw_webgl_at_screen_resolution_and_select_pairs(monkeypatch, synthetic_ws):
    """Every per-pair scatter goes through widgets.pair_chart (or its config): WebGL at pixel ratio 1,
    the cheaper full page load (widgets.SCATTER_CONFIG); points, box and lasso selection."""
    import json

    at = _app(monkeypatch, synthetic_ws)
    seen = {}
    for page in ("margins", "entropy", "compare"):
        _open(at, page)
        if page == "margins":  # with a π_l, the page adds the power-law scatter
            at.selectbox(key="margins_pi_l").set_value("checkpoint-100").run()
        if page == "entropy":  # its per-pair scatter is drawn once its expander is opened
            at.session_state["entropy_pairs"] = True
            at.run()
        for chart in at.get("plotly_chart"):
            spec = json.loads(chart.proto.spec)
            if any(t.get("mode") == "markers" for t in spec["data"]):
                seen[(page, chart.proto.id)] = chart.proto
    assert len(seen) == 4, seen.keys()
    for proto in seen.values():
        assert json.loads(proto.config)["plotGlPixelRatio"] == 1
    selectable = [p for p in seen.values() if p.selection_mode]
    assert len(selectable) == 3
    assert all(set(p.selection_mode) == set(selectable[0].selection_mode) and len(p.selection_mode) == 3 for p in selectable)


@pytest.mark.parametrize(("page", "key"), [("margins", "margins_pairs"), ("margins", "margins_power_law"),
                                         ("entropy", "entropy_pairs"), ("compare", "compare_pairs")])
def test_a_large_runs_pair_scatter_is_drawn_once_opened_and_stays_open(monkeypatch, synthetic_ws, page, key):
    """widgets.pair_drill_down: above INLINE_PAIRS pairs the page sends no per-pair scatter until its
    drill-down is opened; opened, it sends one point per pair of the run, and it is still open after
    a visit to another page. At or below INLINE_PAIRS it is open from the start."""
    import base64

    import numpy as np
    import plotly.io

    from did_ui import widgets

    def scatter(at):
        charts = [plotly.io.from_json(c.proto.spec) for c in at.get("plotly_chart")]
        return [t for fig in charts for t in fig.data if t.mode == "markers"]

    def visit(at):
        _open(at, page)
        if key == "margins_power_law":  # the fit's scatter needs a π_l (the session keeps the choice)
            at.selectbox(key="margins_pi_l").set_value("checkpoint-100").run()
        return at

    at = visit(_app(monkeypatch, synthetic_ws))
    assert len(scatter(at)) == (2 if key == "margins_power_law" else 1)  # 60 pairs <= INLINE_PAIRS: drawn at once

    monkeypatch.setattr(widgets, "INLINE_PAIRS", 59)
    at = visit(_app(monkeypatch, synthetic_ws))
    assert not scatter(at) and any(e.label.startswith("Each pair (60): ") for e in at.expander)
    at.session_state[key] = True
    at.run()
    (points,) = scatter(at)
    x = np.frombuffer(base64.b64decode(points.x["bdata"]), points.x["dtype"]) if isinstance(points.x, dict) else points.x
    assert len(x) == 60 and sorted(int(c[0]) for c in points.customdata) == list(range(60))
    _open(at, "runs")
    visit(at)
    assert len(scatter(at)) == 1


def test_training_curves_draw_the_chosen_quantities_and_keep_the_choice(monkeypatch, synthetic_ws):
    """Training curves: one panel per chosen quantity (the likelihood four by default), with each panel's
    median the checkpoints' median computed here from the workspace's pairs; the choice is kept
    after a visit to another page; the long table is sent only once its drill-down is opened."""
    import base64

    import numpy as np
    import plotly.io

    from did_core.workspace import Workspace
    from did_ui import views

    def grid(at):
        (fig,) = [plotly.io.from_json(c.proto.spec) for c in at.get("plotly_chart") if "curves-grid" in c.proto.id]
        return fig

    at = _open(_app(monkeypatch, synthetic_ws), "curves")
    titles = [a.text for a in grid(at).layout.annotations]
    assert titles == [views.CURVE_QUANTITIES[m] for m in views.CURVE_DEFAULTS]
    assert not at.dataframe
    at.multiselect(key="curves_quantities").set_value(["dpo_loss", "logp_chosen"]).run()
    fig = grid(at)
    assert [a.text for a in fig.layout.annotations] == [views.CURVE_QUANTITIES["dpo_loss"], views.CURVE_QUANTITIES["logp_chosen"]]
    ws = Workspace(synthetic_ws)
    pairs = ws.pairs("synthetic")
    median = next(t for t in fig.data if t.name == "median" and t.xaxis == "x2")
    ys = np.frombuffer(base64.b64decode(median.y["bdata"]), median.y["dtype"]) if isinstance(median.y, dict) else median.y
    assert len(ys) == len(median.x) == 4  # the reference and three checkpoints
    for step, value in zip(median.x, ys, strict=True):
        column = "ref_logp_chosen" if step == 0 else "logp_chosen"
        rows = pairs[pairs["step"] == (pairs["step"].min() if step == 0 else step)]
        assert value == pytest.approx(float(np.median(rows[column])))
    _open(at, "runs")
    _open(at, "curves")
    assert [a.text for a in grid(at).layout.annotations] == [views.CURVE_QUANTITIES["dpo_loss"],
                                                            views.CURVE_QUANTITIES["logp_chosen"]]
    at.session_state["curves_table"] = True
    at.run()
    assert len(at.dataframe) == 1
