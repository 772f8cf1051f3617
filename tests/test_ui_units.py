"""The dashboard's plain-Python parts: background jobs, token colouring (escaping), view models."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pandas as pd
import pytest

from did_core.run_settings import RunSettings
from did_ui import job_argv, jobs, views


def _wait(ws, job_id, until=("done", "failed", "cancelled"), timeout=20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        info = jobs.info(ws, job_id)
        if info.status in until:
            return info
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {jobs.info(ws, job_id).status}")


def test_job_runs_in_background_with_progress_and_exit_status(tmp_path):
    code = ("import json, sys\n"  # jobs.start gives every command --progress-json FILE
            "f = open(sys.argv[sys.argv.index('--progress-json') + 1], 'a')\n"
            "f.write(json.dumps({'stage': 'score', 'done': 3, 'total': 4}) + '\\n'); f.flush()\n"
            "print('hello')\n")
    job_id = jobs.start(tmp_path, [sys.executable, "-c", code], kind="score")
    info = _wait(tmp_path, job_id)
    assert info.status == "done" and (info.stage, info.done, info.total) == ("score", 3, 4)
    assert "hello" in info.log_tail and info.error is None
    assert [j.id for j in jobs.list_jobs(tmp_path)] == [job_id]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
@pytest.mark.parametrize("nice", [None, "7", "idle"])
def test_job_priority(tmp_path, monkeypatch, nice):
    """By default the command runs at the server's priority, as the CLI does (under SCHED_IDLE a
    busy core starved one of torch's threads and the whole job: bench/job_throughput.py);
    DID_JOB_NICE=N asks for a niceness, DID_JOB_NICE=idle for SCHED_IDLE. The server keeps its own."""
    if nice is None:
        monkeypatch.delenv("DID_JOB_NICE", raising=False)
    else:
        monkeypatch.setenv("DID_JOB_NICE", nice)
    code = "import os; print('sched', os.sched_getscheduler(0), 'nice', os.nice(0))"
    info = _wait(tmp_path, jobs.start(tmp_path, [sys.executable, "-c", code]))
    want = {None: f"sched {os.SCHED_OTHER} nice {os.nice(0)}", "7": f"sched {os.SCHED_OTHER} nice {os.nice(0) + 7}",
            "idle": f"sched {os.SCHED_IDLE} nice {os.nice(0)}"}[nice]
    assert info.status == "done" and want in info.log_tail, info.log_tail
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_failed_job_reports_the_error_line(tmp_path):
    code = ("import json, sys\n"
            "open(sys.argv[sys.argv.index('--progress-json') + 1], 'a').write(json.dumps({'stage': 'score', 'done': 12, 'total': 40}) + '\\n')\n"
            "sys.stderr.write('  99/100 pairs\\nerror: data.jsonl row 3: missing column chosen\\n'); sys.exit(2)")
    info = _wait(tmp_path, jobs.start(tmp_path, [sys.executable, "-c", code]))
    assert info.status == "failed"
    assert info.error == "error: data.jsonl row 3: missing column chosen"
    assert (info.done, info.total) == (12, 40)  # from progress.jsonl, the one channel; never the log's text


def test_cancel_then_restart(tmp_path):
    job_id = jobs.start(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"])
    assert _wait(tmp_path, job_id, until=("running",)).status == "running"
    assert jobs.cancel(tmp_path, job_id)
    assert _wait(tmp_path, job_id).status == "cancelled"
    again = jobs.restart(tmp_path, job_id)
    first, second = jobs.info(tmp_path, job_id).argv, jobs.info(tmp_path, again).argv
    assert again and again != job_id and second[:-2] == first[:-2]  # the same command, its progress in the new folder
    assert second[-2:] == ["--progress-json", str(jobs.jobs_dir(tmp_path) / again / "progress.jsonl")]
    jobs.cancel(tmp_path, again)
    _wait(tmp_path, again)


def test_job_state_survives_the_launcher(tmp_path):
    """A job whose wrapper vanished without an exit status reads as interrupted (resumable)."""
    d = tmp_path / "jobs" / "20260101-000000-score-abcdef"
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"id": d.name, "kind": "score", "argv": ["x"], "created": 0, "pid": 2**22 + 7}))
    assert jobs.info(tmp_path, d.name).status == "interrupted"
    assert jobs.info(tmp_path, "../../etc") is None


def test_claim_once(tmp_path):
    assert jobs.claim_once(tmp_path, "auto-demo") and not jobs.claim_once(tmp_path, "auto-demo")
    assert jobs.list_jobs(tmp_path) == []  # the marker is not a job


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


def test_tokens_are_escaped_and_carry_exact_values():
    pytest.importorskip("streamlit")
    from did_ui.token_colours import tokens_html

    toks = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": [0, 1, 2], "token_id": [5, 6, 7],
                         "token": ["<script>alert(1)</script>", '" onmouseover="x', "a\nb"],
                         "logp": np.array([-0.5, -1.25, -2.0], np.float32),
                         "ref_logp": np.array([-1.0, -1.0, -1.0], np.float32),
                         "log_ratio": np.array([0.5, -0.25, -1.0], np.float32), "did_entropy": np.float32(np.nan)})
    html = tokens_html(toks, "log_ratio")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '" onmouseover' not in html and "&quot; onmouseover" in html
    assert "log_ratio 0.5000" in html and "logp -1.2500" in html and "↵<br>" in html


STREAMLIT_BACKGROUNDS = {"light": (255, 255, 255), "dark": (14, 17, 23)}
"""Streamlit's theme backgrounds (#ffffff; dark #0e1117): the app sets base = "light", a user can pick dark."""


def _wcag_luminance(rgb) -> float:
    """WCAG 2.x relative luminance, written out here independently of did_ui.token_colours."""
    out = []
    for c in rgb:
        c = c / 255
        out.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    return 0.2126 * out[0] + 0.7152 * out[1] + 0.0722 * out[2]


def _css_colour(text: str, page) -> tuple[float, float, float]:
    """An rgb()/rgba() CSS colour as the browser paints it over `page` (alpha compositing)."""
    import re

    r, g, b, *a = (float(x) for x in re.fullmatch(r"rgba?\(([^)]*)\)", text.strip()).group(1).split(","))
    alpha = a[0] if a else 1.0
    return tuple(alpha * c + (1 - alpha) * p for c, p in zip((r, g, b), page, strict=True))


def _span_contrasts(markup: str) -> list[tuple[str, float]]:
    """(background, contrast of text on it) for every coloured span in `markup`, over both themes."""
    import re

    out = []
    for style in re.findall(r'style="([^"]*)"', markup):
        props = dict(p.split(":", 1) for p in style.split(";") if ":" in p)
        if props.get("background", "transparent") == "transparent":
            continue
        assert "color" in props, style  # a coloured token always says its text colour
        for page in STREAMLIT_BACKGROUNDS.values():
            bg = _css_colour(props["background"], page)
            fg = _css_colour(props["color"], bg)
            hi, lo = sorted((_wcag_luminance(bg), _wcag_luminance(fg)), reverse=True)
            out.append((props["background"], (hi + 0.05) / (lo + 0.05)))
    return out


@pytest.mark.parametrize("colour_by", ["log_ratio", "did_entropy", "logp", "top1_prob", "token_entropy"])
def test_every_token_colour_has_readable_text(colour_by):
    """WCAG AA (4.5:1) for the token text on every colour of the scale: 201 values from one end to the
    other (log-ratios both signs, entropies ≥ 0, log-probs ≤ 0), composited over Streamlit's light and
    dark backgrounds as a browser would; the legend's swatches too."""
    pytest.importorskip("streamlit")
    from did_ui import token_colours

    scale = 1.0 if colour_by == "top1_prob" else 3.0  # a probability's scale is fixed at 1 (colour_scale)
    values = {"log_ratio": np.linspace(-scale, scale, 201), "did_entropy": np.linspace(0, scale, 201),
              "logp": np.linspace(-scale, 0, 201), "top1_prob": np.linspace(0, scale, 201),
              "token_entropy": np.linspace(0, scale, 201)}[colour_by]
    toks = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": np.arange(201), "token_id": np.arange(201),
                         "token": "tok", "logp": -1.0, "ref_logp": -1.0, "log_ratio": 0.0, "did_entropy": 1.0})
    toks[colour_by] = values
    markup = token_colours.tokens_html(toks, colour_by, scale)
    contrasts = _span_contrasts(markup)
    assert len(contrasts) >= 2 * 200  # every value but an exact 0 gets a colour (0 may too)
    worst = min(contrasts, key=lambda bc: bc[1])
    assert worst[1] >= 4.5, worst
    assert len({b for b, _ in contrasts}) > 50  # a scale, not one colour
    legend = _span_contrasts(token_colours.colour_legend_html(colour_by, scale))
    assert len(legend) == 2 * 9 and min(c for _, c in legend) >= 4.5


def test_one_scale_for_both_responses_and_a_caption_per_mode():
    """The page passes one scale to both sides, so equal values get equal colours; each colouring
    has its own caption and legend, and only log-ratio speaks of blue and red."""
    pytest.importorskip("streamlit")
    from did_ui import token_colours

    chosen = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": [0], "token_id": [1], "token": ["a"],
                           "log_ratio": [0.5]})
    rejected = chosen.assign(side="rejected", log_ratio=[2.0])
    both = pd.concat([chosen, rejected])
    scale = token_colours.colour_scale(both, "log_ratio")
    assert scale == 2.0
    assert token_colours.tokens_html(chosen, "log_ratio", scale) != token_colours.tokens_html(chosen, "log_ratio")
    assert set(token_colours.COLOUR_CAPTION) == set(token_colours.COLOUR_BY)
    assert "Blue" in token_colours.COLOUR_CAPTION["log_ratio"]
    for mode in ("did_entropy", "logp"):
        assert "Blue" not in token_colours.COLOUR_CAPTION[mode] and "red" not in token_colours.COLOUR_CAPTION[mode]
    assert "Purple" in token_colours.COLOUR_CAPTION["did_entropy"] and "Orange" in token_colours.COLOUR_CAPTION["logp"]
    assert "no values" in token_colours.colour_legend_html("did_entropy", 0.0)


def test_views_on_a_tiny_table():
    pairs = pd.DataFrame({
        "pair_id": ["0", "1", "0", "1"], "model": ["c-1", "c-1", "c-2", "c-2"], "step": [1, 1, 2, 2],
        "logp_chosen": [-9.0, -5.0, -8.0, -6.0], "logp_rejected": [-10.0, -4.0, -12.0, -8.0],
        "ref_logp_chosen": [-8.0, -5.0, -8.0, -5.0], "ref_logp_rejected": [-9.0, -5.0, -9.0, -5.0],
        "n_tokens_chosen": [2, 2, 2, 2], "n_tokens_rejected": [4, 4, 4, 4]})
    pairs["log_margin"] = pairs.logp_chosen - pairs.logp_rejected
    pairs["ref_log_margin"] = pairs.ref_logp_chosen - pairs.ref_logp_rejected
    pairs["reward_margin"] = 0.1 * (pairs.log_margin - pairs.ref_log_margin)
    pairs["dpo_loss"] = np.logaddexp(0, -pairs.reward_margin)
    pairs["did_entropy_chosen"] = pairs["did_entropy_rejected"] = 1.0
    rs = RunSettings(beta=0.1)
    df = views.with_derived(pairs, rs)
    assert df["displaced"].tolist() == [1.0, 0.0, 0.0, 1.0]  # both log-ratios < 0
    summary = views.checkpoint_summary(df)
    assert summary["checkpoint"].tolist() == ["c-1", "c-2"]
    assert summary["accuracy"].tolist() == [0.0, 1.0] and summary["displaced share"].tolist() == [0.5, 0.5]
    per_token = views.with_derived(pairs, rs, "mean")
    assert per_token.loc[0, "logp_chosen"] == -4.5 and per_token.loc[0, "logp_rejected"] == -2.5
    table, means, stats = views.compare(df, "c-1", "c-2", rs)
    assert table["delta_log_margin"].tolist() == [3.0, 3.0]
    q = 1 / (1 + np.exp(3))  # both pairs: d_{B/A}(y_w) − d_{B/A}(y_l) = 3, so H = H_binary(σ(3))
    assert np.allclose(table["did_entropy_ba"], -(q * np.log(q) + (1 - q) * np.log(1 - q)))
    assert means.set_index("metric").loc["accuracy", "Δ (B − A)"] == 1.0 and stats["n"] == 2
    order = views.ordering(pairs)
    assert order["M_k > M_ref"].tolist() == [0.0, 1.0] and order["M_k > M_k−1"].tolist() == [0.0, 1.0]
    fit = views.power_law(pairs, "c-2", "c-1", 0.1)["fit"]
    assert np.isfinite(fit["beta_hat"])
    hist = views.histograms(df, "log_margin", bins=4)
    assert sum(hist["counts"]["c-1"]) == 2 and len(hist["centers"]) == 4


def test_names_from_data_are_literal_in_markdown():
    pytest.importorskip("streamlit")
    from did_ui.widgets import md_literal

    assert md_literal("[x](javascript:alert(1))") == "\\[x\\]\\(javascript\\:alert\\(1\\)\\)"
    assert md_literal("**bold** `code` <b>") == "\\*\\*bold\\*\\* \\`code\\` \\<b\\>"
    assert md_literal("a\nb") == "a b"


@pytest.mark.parametrize("n", [10, 2000])
def test_pair_scatter_draws_every_pair_with_its_id(n):
    """One point per pair, its id first in customdata (what a selection hands to the inspector); SVG
    up to figures.SVG_MAX_POINTS points, WebGL above."""
    from did_ui import figures

    rng = np.random.default_rng(n)
    rows = pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "m_ref": rng.normal(size=n), "m": rng.normal(size=n),
                         "reward_margin": rng.normal(size=n)})
    fig = figures.pair_scatter(rows, "m_ref", "m", "t", "M_ref", "M", colour="reward_margin")
    points = fig.data[0]
    assert points.type == ("scatter" if n <= figures.SVG_MAX_POINTS else "scattergl")
    assert [c[0] for c in points.customdata] == rows["pair_id"].tolist()
    np.testing.assert_array_equal(points.x, rows["m_ref"])
    np.testing.assert_array_equal(points.y, rows["m"])
    assert fig.data[1].name == "y = x"


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


def test_histogram_panels_draw_every_panel_s_counts():
    """The entropy page's chosen/rejected histograms, one figure: each panel's lines are that panel's
    counts (checked against a naive count per bin), one legend entry per checkpoint for both panels,
    and the checkpoint filter applies to every panel."""
    from did_ui import figures

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"model": np.repeat(["c1", "c2", "c3"], 50), "h_w": rng.random(150), "h_l": rng.random(150)})
    panels = [(col, views.histograms(df, col, bins=7)) for col in ("h_w", "h_l")]
    fig = figures.histogram_panels(panels, "entropy", only=["c1", "c3"])
    assert [t.name for t in fig.data] == ["c1", "c3", "c1", "c3"]
    assert [t.showlegend for t in fig.data] == [True, True, False, False]
    assert [t.xaxis for t in fig.data] == ["x", "x", "x2", "x2"]
    for trace, (col, hist) in zip(fig.data, [panels[0], panels[0], panels[1], panels[1]], strict=True):
        values = df.loc[df["model"] == trace.name, col].to_numpy()
        lo, hi = df[col].min(), df[col].max()
        naive = [0] * 7
        for x in values:
            naive[min(int((x - lo) / (hi - lo) * 7), 6)] += 1
        assert list(trace.y) == naive == hist["counts"][trace.name]
    assert [a.text for a in fig.layout.annotations] == ["h_w", "h_l"]


def test_curve_bands_outline_the_quantiles_of_each_checkpoint():
    """Training curves' bands (figures.band_grid via views.curves): each band is one closed outline whose
    upper edge is the 90 % (75 %) quantile of the pairs at each step and lower edge the 10 % (25 %),
    computed naively here; steps without values (the reference has no DID entropy) are left out."""
    from did_ui import figures

    rng = np.random.default_rng(3)
    rows = []
    for step in (10, 20, 30):
        for i in range(40):
            w, lo = -rng.gamma(3, 5), -rng.gamma(3, 5)
            rows.append(dict(pair_id=str(i), model=f"checkpoint-{step}", step=step, logp_chosen=w - step / 10 + rng.normal(),
                             logp_rejected=lo - step / 5 + rng.normal(), ref_logp_chosen=w, ref_logp_rejected=lo,
                             n_tokens_chosen=5, n_tokens_rejected=5, did_entropy_chosen=rng.uniform(0, 2),
                             did_entropy_rejected=rng.uniform(0, 2)))
    raw = pd.DataFrame(rows)
    long = views.curves(views.with_derived(raw, RunSettings(beta=0.1)), None)
    panels = [(m, *views.curve_frame(long, m)) for m in ("logp_chosen", "did_entropy_chosen")]
    fig = figures.band_grid(panels)
    for axis, (metric, _, _) in zip(("x", "x2"), panels, strict=True):
        bands = {t.name: t for t in fig.data if t.xaxis == axis and t.fill == "toself"}
        assert set(bands) == {"10–90 %", "25–75 %"}
        steps = ([0] if metric == "logp_chosen" else []) + [10, 20, 30]
        for name, (q_lo, q_hi) in (("10–90 %", (0.1, 0.9)), ("25–75 %", (0.25, 0.75))):
            x, y = list(bands[name].x), list(bands[name].y)
            assert x == steps + steps[::-1]
            for k, step in enumerate(steps):
                values = (raw[raw.step == 10].ref_logp_chosen if step == 0 else raw[raw.step == step][metric]).to_numpy()
                assert y[k] == pytest.approx(np.quantile(values, q_hi))
                assert y[-1 - k] == pytest.approx(np.quantile(values, q_lo))


@pytest.mark.parametrize(("value", "expected"), [(None, 1000), ("0", 0), ("250", 250), (" 40 ", 40), ("abc", 1000),
                                                 ("-5", 1000), ("1e3", 1000)])
def test_inline_pairs_comes_from_the_environment_or_defaults(monkeypatch, value, expected):
    from did_ui import widgets

    if value is None:
        monkeypatch.delenv("DID_INLINE_PAIRS", raising=False)
    else:
        monkeypatch.setenv("DID_INLINE_PAIRS", value)
    assert widgets.env_count("DID_INLINE_PAIRS", 1000) == expected


def _power_law_pairs(beta: float, pi_l_shift: float, n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A pairs table with a checkpoint "star" and a model "pi_l" whose margins obey
    M_ref − M_l = pi_l_shift·(M_star − M_ref) + noise (pi_l_shift = β: the paper's condition)."""
    rng = np.random.default_rng(seed)
    ref_w, ref_l = -rng.gamma(4, 3, n), -rng.gamma(4, 3, n)
    up = rng.normal(2.0, 1.0, n)                       # M_star − M_ref
    down = pi_l_shift * up + rng.normal(0, 0.02, n)    # M_ref − M_l
    rows = []
    for model, step, m_shift in (("star", 100, up), ("pi_l", 200, -down)):
        rows.append(pd.DataFrame({"pair_id": [str(i) for i in range(n)], "model": model, "step": step,
                                  "logp_chosen": ref_w + m_shift, "logp_rejected": ref_l, "ref_logp_chosen": ref_w,
                                  "ref_logp_rejected": ref_l, "n_tokens_chosen": 5, "n_tokens_rejected": 5}))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize(("shift", "words"), [(0.1, ["positive", "within two standard errors", "as the paper predicts"]),
                                              (0.5, ["positive", "5× the trainer's β = 0.1"]),
                                              (-0.47, ["-0.47", "negative", "earlier checkpoint"])])
def test_power_law_reading_says_what_the_slope_means(shift, words):
    """views.power_law_reading on real fits: the paper's condition (slope = β) reads as agreement, a
    slope 5× β as a disagreement in size, a negative slope (π_l an earlier checkpoint) as the opposite
    of the prediction; one sentence every time."""
    fit = views.power_law(_power_law_pairs(0.1, shift), "star", "pi_l", 0.1)["fit"]
    assert fit["beta_hat"] == pytest.approx(shift, abs=0.01)
    text = views.power_law_reading(fit)
    assert all(w in text for w in words), text
    assert text.endswith(".") and text.count(". ") == 0, text
    assert "trainer's β = 0.1" in text


def test_power_law_reading_without_a_slope_or_trainer_beta():
    nan = float("nan")
    assert "No slope" in views.power_law_reading(dict(beta_hat=nan, slope_stderr=nan, r2=nan, trainer_beta=0.1,
                                                      ordered_share=nan))
    text = views.power_law_reading(dict(beta_hat=0.2, slope_stderr=0.01, r2=0.1, trainer_beta=None, ordered_share=0.5))
    assert "does not record" in text and "far from any line" in text and "50% of pairs" in text


@pytest.mark.parametrize(("n", "bins"), [(1, 10), (60, 10), (500, 16), (1000, 20), (8000, 40), (100_000, 40)])
def test_histogram_bins_follow_the_rice_rule(n, bins):
    assert views.histogram_bins(n) == bins
    df = pd.DataFrame({"model": "c", "x": np.arange(n, dtype=float)})
    assert len(views.histograms(df, "x")["centers"]) == bins


def test_log_margin_histogram_is_readable_polygons_over_a_filled_reference():
    """figures.histogram_overlay: one frequency polygon per checkpoint (no step outlines), the reference
    first as one filled area behind them with its counts scaled to the checkpoints' bin width (its own
    bins are narrower here), and every polygon's points are the naive bin counts at the bin centres."""
    from did_ui import figures

    rng = np.random.default_rng(1)
    models = [f"checkpoint-{k}" for k in (20, 40, 60, 80, 100)]
    df = pd.DataFrame({"model": np.repeat(models, 500),
                       "m": np.concatenate([rng.normal(k / 20, 1 + k / 50, 500) for k in (20, 40, 60, 80, 100)])})
    hist = views.histograms(df, "m")
    ref = views.histograms(pd.DataFrame({"model": "reference", "m": rng.normal(0, 1, 500)}), "m")
    assert ref["width"] < hist["width"]
    fig = figures.histogram_overlay(hist, "t", "log-margin", extra=ref)
    assert [t.name for t in fig.data] == ["reference", *models]
    assert fig.data[0].fill == "tozeroy" and all(t.fill is None for t in fig.data[1:])
    assert all(t.line.shape in (None, "linear") for t in fig.data)
    assert list(fig.data[0].y) == pytest.approx([c * hist["width"] / ref["width"] for c in ref["counts"]["reference"]])
    assert sum(ref["counts"]["reference"]) == 500
    edges = np.linspace(df["m"].min(), df["m"].max(), len(hist["centers"]) + 1)
    for trace in fig.data[1:]:
        naive = np.histogram(df.loc[df["model"] == trace.name, "m"], bins=edges)[0]
        assert list(trace.y) == naive.tolist() and list(trace.x) == pytest.approx((edges[:-1] + edges[1:]) / 2)


# --- deep links: did_ui.selection.resolve -----------------------------------------------------

RUNS = ["demo-high", "demo-low"]
CKPTS = {"demo-high": ["checkpoint-20", "checkpoint-100"], "demo-low": ["checkpoint-20", "checkpoint-60", "checkpoint-100"]}
PAIRS = {"demo-high": ["high-00-00", "high-00-01"], "demo-low": ["low-00-00", "low-00-17"]}
EXAMPLE_KEYS = ("run", "ckpt", "example")


def _resolve(params, keys=EXAMPLE_KEYS, **kwargs):
    from did_ui import selection

    return selection.resolve(params, RUNS, CKPTS.__getitem__, PAIRS.__getitem__, keys=keys, **kwargs)


def test_a_good_deep_link_is_honoured_without_a_warning_or_a_rewrite():
    r = _resolve({"run": "demo-low", "ckpt": "checkpoint-60", "example": "low-00-17"})
    assert (r.state.run, r.state.ckpt, r.state.example) == ("demo-low", "checkpoint-60", "low-00-17")
    assert r.warnings == () and r.corrected_url() == r.asked


@pytest.mark.parametrize(("params", "shown", "warning"), [
    ({"run": "nope"}, ("demo-high", "checkpoint-100", None), "No run 'nope' in this workspace; showing demo-high."),
    ({"run": "demo-low", "ckpt": "checkpoint-7"}, ("demo-low", "checkpoint-100", None),
     "Run 'demo-low' has no checkpoint 'checkpoint-7'; showing checkpoint-100."),
    # the README's old form: a row number, not one of the ids the UI shows
    ({"run": "demo-low", "ckpt": "checkpoint-100", "example": "17"}, ("demo-low", "checkpoint-100", "low-00-00"),
     "Run 'demo-low' has no pair '17'; showing its first pair, low-00-00."),
    ({"run": "demo-low", "example": "high-00-01"}, ("demo-low", "checkpoint-100", "low-00-00"),
     "Run 'demo-low' has no pair 'high-00-01'; showing its first pair, low-00-00."),
])
def test_a_bad_deep_link_value_warns_and_falls_back(params, shown, warning):
    r = _resolve(params)
    assert (r.state.run, r.state.ckpt, r.state.example) == shown
    assert r.warnings == (warning,)
    assert r.corrected_url() == {k: v for k, v in zip(EXAMPLE_KEYS, shown, strict=True) if k in params}


def test_every_bad_value_of_one_link_is_named():
    r = _resolve({"run": "nope", "ckpt": "checkpoint-60", "example": "x"})
    assert r.state.run == "demo-high"
    assert r.state.ckpt == "checkpoint-100"  # checkpoint-60 is demo-low's, not demo-high's
    assert r.warnings == ("No run 'nope' in this workspace; showing demo-high.",
                          "Run 'demo-high' has no checkpoint 'checkpoint-60'; showing checkpoint-100.",
                          "Run 'demo-high' has no pair 'x'; showing its first pair, high-00-00.")


def test_compare_checkpoint_a_accepts_its_baselines_and_warns_otherwise():
    def baselines(ckpts):
        return ["reference", *ckpts], ckpts[0]

    keys = ("run", "ckpt", "a")
    assert _resolve({"run": "demo-low", "a": "reference"}, keys, baselines=baselines).state.a == "reference"
    r = _resolve({"run": "demo-low", "a": "zzz"}, keys, baselines=baselines)
    assert r.state.a == "checkpoint-20"
    assert r.warnings == ("Run 'demo-low' has no checkpoint 'zzz' to compare from; comparing from checkpoint-20.",)


def test_only_the_pages_own_parameters_are_read():
    """`example` belongs to the Example page: on another page it is neither read nor warned about,
    and a bare address (or an empty value) is the defaults, with nothing to write."""
    from did_ui import selection

    r = _resolve({"run": "demo-low", "example": "nope", "a": "nope"}, keys=selection.page_params("margins"))
    assert r.state.example is None and r.state.a is None and r.warnings == ()
    assert r.asked == {"run": "demo-low"} and r.corrected_url() == {"run": "demo-low"}
    bare = _resolve({"run": "", "example": ""})
    assert (bare.state.run, bare.state.ckpt, bare.state.example) == ("demo-high", "checkpoint-100", None)
    assert bare.warnings == () and bare.corrected_url() == {} == bare.asked
    assert selection.page_params("example") == ("run", "ckpt", "example", "numerics")
    assert selection.page_params("compare") == ("run", "ckpt", "a", "numerics", "a_run")
    assert selection.page_params("curves") == ("run", "ckpt", "numerics", "runs")
    assert selection.page_params("lab") == () == selection.page_params("score")


def test_a_warning_quotes_a_forged_value_on_one_short_line():
    r = _resolve({"run": "x" * 500 + "\n<script>"})
    (message,) = r.warnings
    assert "\n" not in message and len(message) < 120 and message.startswith("No run 'xxx") and "…'" in message


def test_remembered_values_fill_gaps_silently():
    r = _resolve({"run": "demo-low"}, remembered={"ckpt": "checkpoint-7", "example": "low-00-17"})
    assert (r.state.ckpt, r.state.example) == ("checkpoint-100", "low-00-17") and r.warnings == ()


def test_numerics_in_the_url_is_validated_against_the_runs_numerics():
    """A run scored in both numerics can be shown in either (`numerics=`); one it was not scored in
    warns and shows the primary; a bare address shows the primary without writing it."""
    from did_ui import selection

    def numerics_of(run):
        return ["exact", "trainer"] if run == "both" else ["exact"]
    ckpts = {"both": ["c-1"], "one": ["c-1"]}.__getitem__
    keys = selection.page_params("curves")
    r = selection.resolve({"run": "both", "numerics": "trainer"}, ["both", "one"], ckpts, keys=keys,
                          numerics_of=numerics_of)
    assert r.state.numerics == "trainer" and r.warnings == ()
    r = selection.resolve({"run": "one", "numerics": "trainer"}, ["both", "one"], ckpts, keys=keys,
                          numerics_of=numerics_of)
    assert r.state.numerics is None  # the primary
    assert r.warnings == ("Run 'one' was not scored in 'trainer' numerics; showing exact.",)
    assert r.corrected_url() == {"run": "one"}
    bare = selection.resolve({}, ["both", "one"], ckpts, keys=keys, numerics_of=numerics_of)
    assert bare.state.numerics is None and bare.corrected_url() == {}


def test_job_label_never_reads_done_twice():
    pytest.importorskip("streamlit")
    from did_ui.job_panel import job_label

    def job(status, stage, done, total, eta=None, paused=0.0):
        return jobs.JobInfo(id="j", kind="score", argv=[], created=100.0, status=status, stage=stage, done=done,
                            total=total, eta_s=eta, error=None, log_tail="", paused_s=paused)
    assert job_label(job("running", "score", 120, 512, 9.0, paused=1.25)) == (
        "score job `j`: **running** · score · 120/512 · held 1.2 s for page draws · ETA 9 s")
    assert job_label(job("done", "done", 512, 512)) == "score job `j`: **done** · 512/512"
    assert job_label(job("running", "done", 512, 512), now=110.0) == "score job `j`: **running** · 512/512 · 10 s elapsed"
    assert job_label(job("running", "score", 120, 512, 9.0)) == "score job `j`: **running** · score · 120/512 · ETA 9 s"


def test_squeezing_colourings_have_their_own_scale_caption_and_legend():
    """Top-1 probability is drawn on a fixed 0–1 scale (one colour, one probability in every pair and
    checkpoint); next-token entropy on the largest value shown, like DID entropy. Each has a caption
    naming its own colour (no blue or red) and a legend with its ends' meanings."""
    pytest.importorskip("streamlit")
    from did_ui import token_colours

    toks = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": [0, 1], "token_id": [1, 2],
                         "token": ["a", "b"], "top1_prob": [0.2, 0.4], "token_entropy": [0.5, 2.5],
                         "ref_top1_prob": [0.3, 0.3], "ref_token_entropy": [1.0, 1.0]})
    assert token_colours.colour_scale(toks, "top1_prob") == 1.0
    assert token_colours.colour_scale(toks, "token_entropy") == 2.5
    assert token_colours.colour_scale(toks.assign(top1_prob=np.nan), "top1_prob") == 0.0
    for mode, colour in (("top1_prob", "Green"), ("token_entropy", "Teal")):
        cap = token_colours.COLOUR_CAPTION[mode]
        assert cap.startswith(colour) and "Blue" not in cap and "red" not in cap
        assert mode in token_colours.SQUEEZING_COLOURS
    assert "peaked (squeezed)" in token_colours.colour_legend_html("top1_prob", 1.0)
    assert "1.00" in token_colours.colour_legend_html("top1_prob", 1.0)
    tip = token_colours.tokens_html(toks, "top1_prob", 1.0)
    assert "top1_prob 0.2000 | ref_top1_prob 0.3000 | token_entropy 0.5000 | ref_token_entropy 1.0000" in tip


def test_every_page_says_which_page_it_is():
    """widgets.current_page is what a page says in its first line (widgets.start_page): the key of its
    own file in page_list.PAGES, the url path whose query parameters it owns (selection.PAGE_PARAMS)."""
    from pathlib import Path

    from did_ui import page_list, selection

    root = Path(__file__).resolve().parents[1]
    for key, info in page_list.PAGES.items():
        code = [line for line in (root / info.path).read_text().splitlines() if line and not line.startswith(("#", " "))]
        starts = [line for line in code if "widgets.start_page(" in line]
        assert starts == [f'widgets.start_page("{key}")'], (info.path, starts)
        assert key in selection.PAGE_PARAMS


def test_the_dashboard_uses_no_private_streamlit_name():
    """app.py, pages/ and did_ui/ use streamlit only as `import streamlit as st` and its public names:
    no `streamlit.runtime`/`streamlit.web`… import, no `st._…` attribute."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [root / "app.py", *sorted((root / "pages").glob("*.py")), *sorted((root / "did_ui").glob("*.py"))]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(from|import)\s+streamlit\.|\bst\._[A-Za-z]", line):
                found.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not found


def test_the_demo_build_starts_once_and_only_when_the_page_asks(tmp_path, monkeypatch):
    """Drawing the empty-workspace panel starts no job; `jobs.start_demo_once`, which pages/runs.py calls,
    starts one for the first visitor of a workspace and never again (another session, a later visit,
    DID_AUTO_DEMO=0)."""
    from streamlit.testing.v1 import AppTest

    started = []
    monkeypatch.setattr(jobs, "start", lambda root, argv, kind="score", cwd=None: started.append((argv, kind)) or "j")
    monkeypatch.setenv("DID_AUTO_DEMO", "1")
    at = AppTest.from_function(_demo_panel, args=(str(tmp_path / "a"),)).run(timeout=30)
    assert not at.exception and started == []  # the panel alone: a button, no job
    assert [b.label for b in at.button] == ["Build the embedded demo"]
    assert jobs.start_demo_once(tmp_path / "a") == "j"
    assert jobs.start_demo_once(tmp_path / "a") is None  # a second session of the same workspace
    assert [(argv[-3:], kind) for argv, kind in started] == [(["demo", "--workspace", str(tmp_path / "a")], "demo")]
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    assert jobs.start_demo_once(tmp_path / "b") is None and len(started) == 1


def _demo_panel(root):
    from did_ui import job_panel

    job_panel.demo_panel(root)
