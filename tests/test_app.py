"""AppTest: every page renders on a synthetic workspace and on an empty one; the key interactions
(choosing checkpoints, a deep link, selection → example) work."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from app_tools import metrics as _metrics  # noqa: E402
from app_tools import open_app as _app  # noqa: E402
from app_tools import open_page as _open  # noqa: E402
from app_tools import synthetic_workspace  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from did_ui import selection, widgets  # noqa: E402

PAGES = ["runs", "curves", "margins", "entropy", "compare", "example", "score", "lab"]


@pytest.fixture(scope="module")
def synthetic_ws(tmp_path_factory) -> str:
    return synthetic_workspace(tmp_path_factory.mktemp("ws"))


def _menu(at: AppTest) -> dict[str, dict[str, str]]:
    """The sidebar menu (picker.page_menu): each page link's url path -> the query it carries."""
    from urllib.parse import parse_qsl

    return {link.proto.page: dict(parse_qsl(link.proto.query_string)) for link in at.sidebar.get("page_link")}


def test_every_page_renders_on_a_synthetic_workspace(monkeypatch, synthetic_ws):
    at = _app(monkeypatch, synthetic_ws)
    assert set(_menu(at)) == set(selection.PAGE_PARAMS) - {"runs"}  # at /, Runs links / itself (lit as current)
    assert _menu(at)["margins"] == {"run": "synthetic", "ckpt": "checkpoint-300"}  # links carry the selection
    assert _menu(at)["lab"] == {}
    for page in PAGES:
        _open(at, page)
        assert at.title, page
        assert not at.error, (page, [e.value for e in at.error])
        assert not at.warning, (page, [w.value for w in at.warning])
    # A bare address shows the defaults and stays bare: writing them would cost a history entry per load.
    assert "run" not in at.query_params and "ckpt" not in at.query_params, at.query_params


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
    assert a.options[0].startswith("reference")  # A may be the reference too (B − reference)
    assert a.options[1:] == ["checkpoint-100", "checkpoint-200", "checkpoint-300"]
    assert (a.value, b.value) == ("checkpoint-100", "checkpoint-300")  # first → last by default
    b.set_value("checkpoint-200").run()
    at.sidebar.selectbox(key="pick_a").set_value("checkpoint-300").run()
    assert not at.exception
    assert at.query_params["ckpt"] == "checkpoint-200" and at.query_params["a"] == "checkpoint-300"
    assert any("A = checkpoint\\-300 → B = checkpoint\\-200" in s.value for s in at.subheader)  # names as literal text
    _open(at, "margins")  # the choice follows to other pages
    assert at.sidebar.selectbox(key="pick_ckpt").value == "checkpoint-200"


def test_compare_with_a_equal_to_b_shows_no_deltas(monkeypatch, synthetic_ws):
    """A = B: the page says so and shows B's values without any delta arrow (no "↑ 0.000"), and
    nothing that would only be a table of zeros."""
    at = _open(_app(monkeypatch, synthetic_ws), "compare")
    assert all(m.delta for m in at.metric[:5])  # A ≠ B by default: deltas shown
    at.sidebar.selectbox(key="pick_a").set_value("checkpoint-300").run()
    assert not at.exception and at.query_params["a"] == "checkpoint-300"
    assert any("same checkpoint" in i.value for i in at.info)
    metrics = _metrics(at)
    assert set(metrics) >= {"accuracy", "mean log-margin", "loss (sigmoid)", "displaced share", "mean log π(y_w)"}
    assert all(not m.delta for m in metrics.values()), {k: m.delta for k, m in metrics.items()}
    assert not at.dataframe and not at.get("plotly_chart")
    at.sidebar.selectbox(key="pick_a").set_value("checkpoint-100").run()
    assert all(_metrics(at)[k].delta for k in ("accuracy", "loss (sigmoid)"))


def test_compare_from_the_reference_shows_what_the_checkpoint_learned(monkeypatch, synthetic_ws):
    """A = the reference: every delta is B − reference, computed here from the workspace's pairs:
    the reference's accuracy is 0, its log-margin M_ref, its DPO loss log 2 at any β; the per-pair
    table's A columns are the reference's log-probs; the choice survives a visit to another page."""
    import math

    import numpy as np

    from did_core.losses import pair_table
    from did_core.workspace import Workspace

    at = _open(_app(monkeypatch, synthetic_ws), "compare")
    at.sidebar.selectbox(key="pick_a").set_value("reference").run()
    assert not at.exception and at.query_params["a"] == "reference"
    assert any("A = reference → B = checkpoint\\-300" in s.value for s in at.subheader)
    ws = Workspace(synthetic_ws)
    beta = float(ws.run("synthetic").beta)
    rows = pair_table(ws.pairs("synthetic"), ws.run_settings(ws.run("synthetic")).settings)
    b = rows[rows["model"] == "checkpoint-300"]
    d_w, d_l = b["logp_chosen"] - b["ref_logp_chosen"], b["logp_rejected"] - b["ref_logp_rejected"]
    z = beta * (d_w - d_l)
    want = {  # (B's value, B − reference)
        "accuracy": (float((z > 0).mean()), float((z > 0).mean()) - 0.0),
        "mean log-margin": (float((b["logp_chosen"] - b["logp_rejected"]).mean()),
                            float((d_w - d_l).mean())),
        "loss (sigmoid)": (float(np.logaddexp(0, -z).mean()), float(np.logaddexp(0, -z).mean()) - math.log(2)),
        "displaced share": (float(((d_w < 0) & (d_l < 0)).mean()), float(((d_w < 0) & (d_l < 0)).mean())),
        "mean log π(y_w)": (float(b["logp_chosen"].mean()), float(d_w.mean())),
    }
    metrics = _metrics(at)
    for label, (value, delta) in want.items():
        fmt = "{:.2f}" if label == "mean log π(y_w)" else "{:.4f}" if label == "loss (sigmoid)" else "{:.3f}"
        assert metrics[label].value == fmt.format(value), label
        assert metrics[label].delta == fmt.format(delta), label
    at.session_state["compare_means"] = True
    at.run()
    means = next(d.value for d in at.dataframe if "metric" in d.value.columns).set_index("metric")
    ref = rows.drop_duplicates("pair_id")
    assert means.loc["dpo_loss", "A: reference"] == pytest.approx(math.log(2))
    assert means.loc["accuracy", "A: reference"] == 0 and means.loc["displaced", "A: reference"] == 0
    assert means.loc["log_margin", "A: reference"] == pytest.approx(
        float((ref["ref_logp_chosen"] - ref["ref_logp_rejected"]).mean()))
    assert means.loc["logp_chosen", "A: reference"] == pytest.approx(float(ref["ref_logp_chosen"].mean()))
    movers = next(d.value for d in at.dataframe if "delta_log_margin" in d.value.columns).set_index("pair_id")
    ref = ref.set_index("pair_id")
    assert np.allclose(movers["logp_chosen_a"], ref.loc[movers.index, "ref_logp_chosen"])
    assert np.allclose(movers["log_margin_a"], ref.loc[movers.index, "ref_log_margin"])
    assert np.allclose(movers["dpo_loss_a"], math.log(2))
    _open(at, "margins")
    _open(at, "compare")
    assert at.sidebar.selectbox(key="pick_a").value == "reference"


@pytest.mark.parametrize(("mode", "words", "not_words"), [("log_ratio", ["Blue", "red"], ["Purple"]),
                                                          ("did_entropy", ["Purple", "H_t"], ["Blue", "red"]),
                                                          ("logp", ["Orange"], ["Blue", "red", "Purple"])])
def test_example_caption_and_legend_follow_the_colouring(monkeypatch, synthetic_ws, mode, words, not_words):
    """Each colouring mode draws its own legend and a caption that describes its colours (the DID
    entropy colouring no longer says "Blue: raised; red: lowered"); tokens carry readable text colours."""
    at = _app(monkeypatch, synthetic_ws)
    at.query_params.update({"run": "synthetic", "example": "3", "ckpt": "checkpoint-200"})
    _open(at, "example")
    at.segmented_control(key="example_colour").set_value(mode).run()
    assert not at.exception
    caption = next(c.value for c in at.caption if "share one scale" in c.value)
    assert all(w in caption for w in words) and not any(w in caption for w in not_words), caption
    bodies = [h.proto.body for h in at.get("html")]
    legend = [b for b in bodies if "padding:1px 6px" in b]
    assert len(legend) == 1 and ("no values" in legend[0] or legend[0].count("<span") == 9)
    tokens = [b for b in bodies if "<span title=" in b]
    assert len(tokens) == 2
    if mode != "did_entropy":  # the synthetic workspace stores no token-level entropy
        assert all(";color:rgb(" in b for b in tokens)


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
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 3 and warnings[0].startswith("No run '\\.\\./\\.\\./etc'"), warnings  # as literal text
    assert "'\\<script\\>'" in warnings[2]
    assert at.query_params == {"run": "synthetic", "ckpt": "checkpoint-300", "example": "0"}  # the address says what is shown


def test_a_bad_deep_link_value_shows_a_warning_and_the_fallback(monkeypatch, synthetic_ws):
    """Each value a deep link asks for and the workspace lacks is named in an st.warning with what is
    shown instead; a parameter that belongs to another page (`example` on Log-margins) is ignored."""
    at = _app(monkeypatch, synthetic_ws)
    at.query_params.update({"run": "synthetic", "ckpt": "checkpoint-7", "example": "nope"})
    _open(at, "margins")
    assert [w.value for w in at.warning] == ["Run 'synthetic' has no checkpoint 'checkpoint\\-7'; showing checkpoint\\-300\\."]
    assert at.sidebar.selectbox(key="pick_ckpt").value == "checkpoint-300"
    assert at.query_params["ckpt"] == "checkpoint-300"
    at.query_params.clear()
    at.query_params.update({"run": "synthetic", "example": "17"})
    _open(at, "example")
    assert not at.warning and at.text_input[0].value == "17"  # a real id: honoured, nothing to say
    at.query_params.update({"example": "low-00-17"})
    at.run()
    assert [w.value for w in at.warning] == ["Run 'synthetic' has no pair 'low\\-00\\-17'; showing its first pair, 0\\."]
    assert at.text_input[0].value == "0"


def test_a_picker_change_writes_the_url_once_and_the_menu_follows(monkeypatch, synthetic_ws):
    """A sidebar pick sets the page's whole selection in one query-string change (each change is a
    browser history entry); on Compare it keeps A."""
    import streamlit as st

    at = _app(monkeypatch, synthetic_ws)
    at.query_params.update({"run": "synthetic", "ckpt": "checkpoint-300", "a": "reference"})
    _open(at, "compare")
    writes, depth = [], [0]
    qp_class = type(st.query_params)  # each outermost call of a public mutator: one query-string change

    def counted(name):
        original = getattr(qp_class, name)

        def call(self, *args, **kwargs):
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    writes.append(self.to_dict())
        return call

    for name in ("__setitem__", "__delitem__", "update", "from_dict", "clear", "pop", "setdefault"):
        if hasattr(qp_class, name):
            monkeypatch.setattr(qp_class, name, counted(name))
    at.sidebar.selectbox(key="pick_ckpt").set_value("checkpoint-200").run()
    assert not at.exception
    assert writes == [{"run": "synthetic", "ckpt": "checkpoint-200", "a": "reference"}]
    assert at.sidebar.selectbox(key="pick_a").value == "reference"


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
    """Input the form can check (paths) is refused before a job starts (tests/test_score_page.py); what
    only the job finds (a dataset without preference columns) ends the job with its `error:` line."""
    import time

    from cli_world import build_world

    from did_ui import jobs

    world = build_world(tmp_path / "world", n_pairs=4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no preference columns here"}\n')
    at = _open(_app(monkeypatch, str(tmp_path)), "score")
    inputs = {t.label: t for t in at.text_input}
    inputs["…or a path on this machine"].set_value(str(bad))
    inputs["Reference model (SFT)"].set_value(str(world["ref"]))
    at.text_area[0].set_value(str(world["run"] / "checkpoint-2"))
    at.form_submit_button[0].click().run()
    assert not at.exception
    assert any("Started job" in s.value for s in at.success), [e.value for e in at.error]
    [job] = jobs.list_jobs(tmp_path)
    assert job.argv[1:4] == ["-m", "did_core", "score"] and "--progress-json" in job.argv
    for _ in range(300):
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
    for run in ("demo-low", "demo-high", "demo-low-beta0.1"):
        at.query_params["run"] = run
        for page in PAGES:
            _open(at, page)
            assert not at.error, (run, page, [e.value for e in at.error])
            tables = at.dataframe
            assert all(t.proto.placeholder == widgets.MISSING for t in tables), (run, page)  # a dash, not "None"
            if page == "margins":  # the ordering table has a missing value: its first checkpoint's ordering
                assert any(t.value.isna().any().any() for t in tables), run
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
    assert len(seen) == 5, seen.keys()  # margins: M_π, the power law, CHES; entropy; compare
    for proto in seen.values():
        assert json.loads(proto.config)["plotGlPixelRatio"] == 1
    selectable = [p for p in seen.values() if p.selection_mode]
    assert len(selectable) == 4
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
        # the CHES section's scatter has its own drill-down (test_margins_ches_section_...)
        charts = [plotly.io.from_json(c.proto.spec) for c in at.get("plotly_chart") if "ches" not in c.proto.id]
        return [t for fig in charts for t in fig.data if getattr(t, "mode", None) == "markers"]

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
    at.multiselect(key="curves_quantities").set_value(["loss", "logp_chosen"]).run()
    fig = grid(at)
    assert [a.text for a in fig.layout.annotations] == [views.CURVE_QUANTITIES["loss"], views.CURVE_QUANTITIES["logp_chosen"]]
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
    assert [a.text for a in grid(at).layout.annotations] == [views.CURVE_QUANTITIES["loss"],
                                                            views.CURVE_QUANTITIES["logp_chosen"]]
    at.session_state["curves_table"] = True
    at.run()
    assert len(at.dataframe) == 1


RAW_IDENTIFIER = r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$"
"""A column name such as `js_target` or `kl_policy_target`: what no legend may show."""


def test_no_legend_shows_a_raw_column_name(monkeypatch, synthetic_ws):
    """Every figure every page builds (the per-pair drill-downs opened, a π_l picked, the lab at its
    defaults): each trace's legend name and each colour bar's title is a human name."""
    import json
    import re

    at = _app(monkeypatch, synthetic_ws)
    for key in ("margins_pairs", "margins_power_law", "entropy_pairs", "compare_pairs"):
        at.session_state[key] = True
    names: dict[str, set[str]] = {}
    for page in PAGES:
        _open(at, page)
        if page == "margins":
            at.selectbox(key="margins_pi_l").set_value("checkpoint-100").run()
        for chart in at.get("plotly_chart"):
            for trace in json.loads(chart.proto.spec)["data"]:
                shown = [trace.get("name")] if trace.get("showlegend", True) is not False else []
                title = (trace.get("marker") or {}).get("colorbar", {}).get("title", {})
                shown.append(title.get("text") if isinstance(title, dict) else title)
                names.setdefault(page, set()).update(n for n in shown if n)
    assert {"lab", "margins", "compare", "entropy", "curves", "example"} <= set(names), names.keys()
    assert "JS(π, π*)" in names["lab"] and "KL(π ‖ π*)" in names["lab"]
    raw = {page: sorted(n for n in found if re.match(RAW_IDENTIFIER, n)) for page, found in names.items()}
    assert not any(raw.values()), raw


def test_the_warm_up_fills_the_caches_from_a_plain_thread(monkeypatch, synthetic_ws, caplog):
    """data.warm_up runs in a thread with no script context (no private Streamlit API): once it ends,
    the default run's views come from the cache (the store is not read again), and neither a
    missing-context warning nor a failure was logged (the wait for a quiet moment runs too)."""
    import logging
    import threading

    import streamlit as st

    from did_core.workspace import Workspace
    from did_ui import data

    monkeypatch.setattr(data, "LAB_WARM_DELAY_S", 0.5)
    st.cache_data.clear()
    monkeypatch.delenv("DID_WARM_UP", raising=False)
    caplog.set_level(logging.WARNING)
    data.warm_up(synthetic_ws, again=True)  # earlier tests' app runs warmed this workspace already
    [thread] = [t for t in threading.enumerate() if t.name == "did-warm-up"]
    thread.join(timeout=120)
    assert not thread.is_alive()

    def no_reads(*args, **kwargs):
        raise AssertionError("the store was read after the warm-up")

    monkeypatch.setattr(Workspace, "pairs", no_reads)
    run = data.run_names(synthetic_ws, data.version(synthetic_ws))[0]
    ver = data.run_version(synthetic_ws, run)
    ckpts = data.checkpoints(synthetic_ws, run, ver)
    data.summary(synthetic_ws, run, ver)
    data.checkpoint_rows(synthetic_ws, run, ver, ckpts[-1])
    assert not [r for r in caplog.records if "ScriptRunContext" in r.getMessage()]
    assert not [r for r in caplog.records if "warm-up" in r.getMessage()], caplog.text


def _fingerprint(df) -> tuple:
    """What a page could change in a frame: its columns, dtypes, index, values and attrs."""
    import pandas as pd

    return (list(df.columns), [str(t) for t in df.dtypes], df.index.name, list(df.index[:3]), len(df),
            int(pd.util.hash_pandas_object(df, index=True).sum()), repr(df.attrs))


def test_opening_every_page_leaves_the_held_tables_as_they_were(monkeypatch, synthetic_ws):
    """The big per-run tables are held once per server (st.cache_resource, shared by every session,
    not copied on a hit): opening every page, with per-token sums and an example open, leaves each
    held frame the same object with the same columns and values; the pages read them from there
    (the store is not read again); the picker and the pages key the run's primary view alike."""
    from did_core.workspace import Workspace
    from did_ui import data

    root, run = synthetic_ws, "synthetic"
    ver = data.run_version(root, run)
    assert data.view_version(root, run) == data.view_version(root, run, data.numerics(root, run)[0]) == ver
    held = {f.__name__: f.held for f in (data.raw_pairs, data.pairs, data.pairs_per_token, data.entropy_table,
                                         data.dataset)}
    frames = {name: h(root, run, ver) for name, h in held.items()}
    before = {name: _fingerprint(df) for name, df in frames.items()}
    assert "did_entropy_pair" not in frames["pairs"] and "log_margin" not in frames["raw_pairs"]
    shared = data.pairs(root, run, ver)
    shared["added"] = 1.0  # a caller's change stays in its copy
    shared.loc[shared.index[0], "log_margin"] = 1e9
    assert "added" not in frames["pairs"] and frames["pairs"]["log_margin"].iloc[0] != 1e9

    def no_reads(*args, **kwargs):
        raise AssertionError("the store was read again: a page missed the held table")

    monkeypatch.setattr(Workspace, "pairs", no_reads)
    at = _app(monkeypatch, synthetic_ws)
    for page in PAGES:
        _open(at, page)
        assert not at.error, (page, [e.value for e in at.error])
    for page, key in (("curves", "curves_agg"), ("margins", "margins_agg")):
        _open(at, page).segmented_control(key=key).set_value("mean").run()
        assert not at.exception, page
    at.query_params.update({"run": run, "example": "7"})
    _open(at, "example")
    for name, h in held.items():
        assert h(root, run, ver) is frames[name], name
        assert _fingerprint(frames[name]) == before[name], name


def test_one_cache_key_per_view_of_a_run(monkeypatch, synthetic_ws):
    """The run's primary numerics is keyed by `run_version` alone (the key the picker reads checkpoints
    and pair ids with), whichever numerics is primary; any other numerics gets its own key."""
    from did_core.workspace import Workspace
    from did_ui import data

    root, run = synthetic_ws, "synthetic"
    ver = data.run_version(root, run)
    assert data.view_version(root, run) == data.view_version(root, run, "exact") == ver
    assert data.view_version(root, run, "trainer") == f"{ver}~trainer"
    monkeypatch.setattr(Workspace, "numerics", staticmethod(lambda manifest: ["trainer", "exact"]))
    assert data.view_version(root, run, "trainer") == data.numerics_version(root, run, ver, "trainer") == ver
    assert data.view_version(root, run, "exact") == f"{ver}~exact"
    assert data.numerics_of(data.view_version(root, run, "exact")) == "exact"
    assert data.view_version(root, "missing", "exact") == "none~exact"


def test_the_example_text_is_the_same_from_a_grouped_and_a_single_group_dataset(tmp_path):
    """example_text reads one pair's rows from a dataset file in row groups and the whole held table
    from an older one-group file: the same text either way, and {} for an unknown pair."""
    import pyarrow.parquet as pq
    import streamlit as st

    from did_core.synthetic_ws import make_synthetic_workspace
    from did_core.workspace import Workspace
    from did_ui import data

    run = make_synthetic_workspace(tmp_path, n_pairs=2500, n_checkpoints=1, seed=2, tokens=False)
    ws = Workspace(tmp_path)
    ver = data.run_version(str(tmp_path), run)
    assert ws.dataset_row_groups(run) > 1
    st.cache_data.clear()
    st.cache_resource.clear()
    grouped = {p: data.example_text(str(tmp_path), run, ver, p) for p in ("0", "1234", "2499", "nope")}
    path = ws.dataset_path(ws.run(run).dataset.fingerprint)
    pq.write_table(pq.read_table(path), path)  # as written before row groups: one group
    assert ws.dataset_row_groups(run) == 1
    st.cache_data.clear()
    st.cache_resource.clear()
    single = {p: data.example_text(str(tmp_path), run, ver, p) for p in grouped}
    assert grouped == single and grouped["nope"] == {} and set(grouped["1234"]) == {"prompt", "chosen", "rejected"}
    full = ws.dataset(run).set_index("pair_id")
    assert grouped["1234"]["chosen"] == str(full.loc["1234", "chosen"])


def test_every_table_goes_through_widgets_table():
    """One definition of how a table looks (no index, missing values as a dash): no page or did_ui
    module calls st.dataframe itself."""
    root = Path(__file__).resolve().parents[1]
    files = [root / "app.py", *(root / "pages").glob("*.py"), *(root / "did_ui").glob("*.py")]
    direct = [f.name for f in files if f.name != "widgets.py" and "st.dataframe(" in f.read_text(encoding="utf-8")]
    assert not direct, direct

