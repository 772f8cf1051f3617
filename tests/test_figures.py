"""The figures (did_ui/figures.py): every point and count drawn is the data's, checked naively."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from did_core.run_settings import RunSettings
from did_ui import views


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
