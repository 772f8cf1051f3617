"""The dashboard's plain-Python parts: background jobs, token colouring (escaping), view models."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pandas as pd
import pytest

from did_ui import jobs, views


def _wait(ws, job_id, until=("done", "failed", "cancelled"), timeout=20.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        info = jobs.info(ws, job_id)
        if info.status in until:
            return info
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {jobs.info(ws, job_id).status}")


def test_job_runs_in_background_with_progress_and_exit_status(tmp_path):
    code = ("import json, os, sys\n"
            "f = open(os.environ['DID_PROGRESS_FILE'], 'a')\n"
            "f.write(json.dumps({'stage': 'score', 'done': 3, 'total': 4}) + '\\n'); f.flush()\n"
            "print('hello')\n")
    job_id = jobs.start(tmp_path, [sys.executable, "-c", code], kind="score")
    info = _wait(tmp_path, job_id)
    assert info.status == "done" and (info.stage, info.done, info.total) == ("score", 3, 4)
    assert "hello" in info.log_tail and info.error is None
    assert [j.id for j in jobs.list_jobs(tmp_path)] == [job_id]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
@pytest.mark.parametrize("nice", [None, "7"])
def test_job_runs_as_a_background_batch_task(tmp_path, monkeypatch, nice):
    """The command runs under SCHED_IDLE (it yields whenever the dashboard wants a core), or at the
    niceness DID_JOB_NICE asks for; the server itself keeps its own priority."""
    if nice is None:
        monkeypatch.delenv("DID_JOB_NICE", raising=False)
    else:
        monkeypatch.setenv("DID_JOB_NICE", nice)
    code = "import os; print('sched', os.sched_getscheduler(0), 'nice', os.nice(0))"
    info = _wait(tmp_path, jobs.start(tmp_path, [sys.executable, "-c", code]))
    want = f"sched {os.SCHED_IDLE} nice {os.nice(0)}" if nice is None else f"sched {os.SCHED_OTHER} nice {os.nice(0) + 7}"
    assert info.status == "done" and want in info.log_tail, info.log_tail
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_failed_job_reports_the_error_line(tmp_path):
    code = "import sys; sys.stderr.write('  12/40 pairs\\nerror: data.jsonl row 3: missing column chosen\\n'); sys.exit(2)"
    info = _wait(tmp_path, jobs.start(tmp_path, [sys.executable, "-c", code]))
    assert info.status == "failed"
    assert info.error == "error: data.jsonl row 3: missing column chosen"
    assert (info.done, info.total) == (12, 40)  # parsed from the stderr progress line


def test_cancel_then_restart(tmp_path):
    job_id = jobs.start(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"])
    assert _wait(tmp_path, job_id, until=("running",)).status == "running"
    assert jobs.cancel(tmp_path, job_id)
    assert _wait(tmp_path, job_id).status == "cancelled"
    again = jobs.restart(tmp_path, job_id)
    assert again and again != job_id and jobs.info(tmp_path, again).argv == jobs.info(tmp_path, job_id).argv
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
    argv = jobs.score_argv("d; rm -rf /", "ref model", workspace="/w", run_dir="/runs/x", beta=0.2, limit=5)
    assert argv[1:4] == ["-m", "did_core", "score"] and "d; rm -rf /" in argv and "--run" in argv
    assert argv[argv.index("--beta") + 1] == "0.2" and argv[-1] == "--token-level"
    with pytest.raises(ValueError):
        jobs.score_argv("d", "r", workspace="/w")


def test_tokens_are_escaped_and_carry_exact_values():
    pytest.importorskip("streamlit")
    from did_ui.widgets import tokens_html

    toks = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": [0, 1, 2], "token_id": [5, 6, 7],
                         "token": ["<script>alert(1)</script>", '" onmouseover="x', "a\nb"],
                         "logp": np.array([-0.5, -1.25, -2.0], np.float32),
                         "ref_logp": np.array([-1.0, -1.0, -1.0], np.float32),
                         "log_ratio": np.array([0.5, -0.25, -1.0], np.float32), "did_entropy": np.float32(np.nan)})
    html = tokens_html(toks, "log_ratio")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '" onmouseover' not in html and "&quot; onmouseover" in html
    assert "log_ratio 0.5000" in html and "logp -1.2500" in html and "↵<br>" in html


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
    df = views.with_derived(pairs, 0.1)
    assert df["displaced"].tolist() == [1.0, 0.0, 0.0, 1.0]  # both log-ratios < 0
    summary = views.checkpoint_summary(df)
    assert summary["checkpoint"].tolist() == ["c-1", "c-2"]
    assert summary["accuracy"].tolist() == [0.0, 1.0] and summary["displaced share"].tolist() == [0.5, 0.5]
    per_token = views.with_derived(pairs, 0.1, "mean")
    assert per_token.loc[0, "logp_chosen"] == -4.5 and per_token.loc[0, "logp_rejected"] == -2.5
    table, means, stats = views.compare(pairs, df, "c-1", "c-2", 0.1)
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
    ws.write_run(ws.run("b") | {"beta": 0.3})
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
    long = views.curves(raw, None, 0.1)
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
    assert widgets._env_count("DID_INLINE_PAIRS", 1000) == expected
