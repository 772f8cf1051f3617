"""Log-margin ordering and the power-law fit: exact constructions, failures, naive loops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from did_core.paper import (
    consecutive_ordering,
    fit_power_law,
    log_margin_ordering,
    margins_wide,
    ordering_shares,
    paper_conditions,
)


def _exact_world(n: int, beta: float, seed: int):
    """π_l ∝ π_ref^{1+β} π*^{−β} on each pair ⇒ M_l = (1+β)M_ref − βM_* exactly."""
    rng = np.random.default_rng(seed)
    m_ref = rng.normal(0, 5, n)
    m_star = m_ref + np.abs(rng.normal(1, 2, n)) + 0.01   # M_* > M_ref everywhere
    return m_star, m_ref, (1 + beta) * m_ref - beta * m_star


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 2.0])
def test_exact_power_law_recovered(beta):
    m_star, m_ref, m_l = _exact_world(200, beta, 0)
    fit, table = fit_power_law(m_star, m_ref, m_l, trainer_beta=beta)
    assert fit.beta_hat == pytest.approx(beta, abs=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9) and fit.r2_centered == pytest.approx(1.0, abs=1e-9)
    assert np.abs(table.residual).max() < 1e-9 and fit.slope_stderr < 1e-6
    assert fit.ordered_share == 1.0 and table.ordered.all() and fit.trainer_beta == beta and fit.n == 200


def test_failures_are_flagged():
    m_star, m_ref, m_l = _exact_world(100, 0.3, 1)
    # π_l that prefers y_w more than the reference does: ordering M_ref > M_l fails everywhere
    flags = log_margin_ordering(m_star, m_ref, m_ref + 1.0)
    assert not flags.ref_above_l.any() and not flags.ordered.any() and flags.policy_above_ref.all()
    # a checkpoint worse than the reference: M_π < M_ref
    flags = log_margin_ordering(m_ref - 1.0, m_ref, m_l)
    assert not flags.policy_above_ref.any() and flags.ref_above_l.all()
    # half the pairs broken: share 0.5, the line no longer fits exactly
    m_l2 = m_l.copy()
    m_l2[::2] = m_ref[::2] + np.abs(m_l[::2]) + 1
    fit, table = fit_power_law(m_star, m_ref, m_l2)
    assert fit.ordered_share == pytest.approx(0.5) and fit.r2 < 0.9 and not table.ordered[::2].any()
    # unrelated margins: R² near zero or negative
    rng = np.random.default_rng(2)
    fit, _ = fit_power_law(rng.normal(size=500), rng.normal(size=500), rng.normal(size=500))
    assert fit.r2 < 0.6 and fit.r2_centered < 0.6


def test_fit_vs_naive_loop():
    rng = np.random.default_rng(3)
    mp, mr, ml = rng.normal(size=(3, 40))
    mp[5] = np.nan
    fit, table = fit_power_law(mp, mr, ml)
    sxy = sxx = 0.0
    pts = []
    for a, b, c in zip(mp, mr, ml):
        x, y = a - b, b - c
        if np.isfinite(x) and np.isfinite(y):
            sxy, sxx = sxy + x * y, sxx + x * x
            pts.append((x, y))
    beta = sxy / sxx
    rss = sum((y - beta * x) ** 2 for x, y in pts)
    ybar = sum(y for _, y in pts) / len(pts)
    assert fit.beta_hat == pytest.approx(beta)
    assert fit.r2 == pytest.approx(1 - rss / sum(y * y for _, y in pts))
    assert fit.r2_centered == pytest.approx(1 - rss / sum((y - ybar) ** 2 for _, y in pts))
    assert fit.n == 39 and np.isnan(table.residual[5])
    flags = [(a > b) and (b > c) for a, b, c in zip(mp, mr, ml)]
    assert list(table.ordered) == flags


def _pairs_table(margins: dict[str, np.ndarray], steps: dict[str, int | None], ref: np.ndarray) -> pd.DataFrame:
    """A ws.pairs-like table whose log-margins are the given ones (rejected log-prob fixed at −10)."""
    rows = []
    for model, m in margins.items():
        for i, (mi, ri) in enumerate(zip(m, ref)):
            rows.append(dict(pair_id=str(i), model=model, step=steps[model], logp_chosen=-10 + mi,
                             logp_rejected=-10.0, ref_logp_chosen=-10 + ri, ref_logp_rejected=-10.0,
                             n_tokens_chosen=4, n_tokens_rejected=5))
    return pd.DataFrame(rows)


def test_paper_conditions_on_pairs_table():
    m_star, m_ref, m_l = _exact_world(30, 0.2, 4)
    pairs = _pairs_table({"pi_l": m_l, "checkpoint-20": m_star}, {"pi_l": None, "checkpoint-20": 20}, m_ref)
    wide = margins_wide(pairs)
    assert list(wide.columns) == ["reference", "checkpoint-20", "pi_l"]
    np.testing.assert_allclose(wide["checkpoint-20"], m_star, atol=1e-9)
    fit, table = paper_conditions(pairs, "checkpoint-20", "pi_l", trainer_beta=0.2)
    assert fit.beta_hat == pytest.approx(0.2, abs=1e-6) and list(table.index[:2]) == ["0", "1"]
    with pytest.raises(ValueError):
        paper_conditions(pairs, "checkpoint-20")
    with pytest.raises(ValueError):
        paper_conditions(pairs, "checkpoint-99", "pi_l")
    # per-token-mean aggregation divides by the token counts before differencing
    wide_mean = margins_wide(pairs, "mean")
    np.testing.assert_allclose(wide_mean["reference"], (-10 + m_ref) / 4 + 10 / 5, atol=1e-9)


def test_consecutive_ordering_vs_naive():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=25)
    ms = {f"checkpoint-{s}": ref + rng.normal(0.5 * k, 1, 25) for k, s in enumerate((100, 200, 300), 1)}
    pairs = _pairs_table(ms, {f"checkpoint-{s}": s for s in (100, 200, 300)}, ref).sample(frac=1, random_state=0)
    wide = margins_wide(pairs)
    assert list(wide.columns) == ["reference", "checkpoint-100", "checkpoint-200", "checkpoint-300"]
    long = consecutive_ordering(wide)
    assert len(long) == 75
    path = list(wide.columns)
    for r in long.itertuples():
        k = path.index(r.model)
        vals = [wide.loc[r.pair_id, c] for c in path]
        assert r.prev_model == path[k - 1]
        assert r.increased == (vals[k] > vals[k - 1])
        assert r.monotone == all(vals[j] > vals[j - 1] for j in range(1, k + 1))
        if k == 1:
            assert pd.isna(r.ordered)
        else:
            assert r.ordered == (vals[k] > vals[k - 1] > vals[k - 2])
    shares = ordering_shares(wide)
    assert list(shares.model) == path[1:] and list(shares.prev_model) == path[:-1] and (shares.n == 25).all()
    for r in shares.itertuples():  # the shares of the long table's flags (NA skipped: NaN at k = 1)
        rows = long[long.model == r.model]
        assert r.increased == pytest.approx(rows.increased.mean())
        assert r.monotone == pytest.approx(rows.monotone.mean())
        want = rows.ordered.mean()
        assert (pd.isna(r.ordered) and pd.isna(want)) or r.ordered == pytest.approx(want)
    assert pd.isna(shares.ordered[0]) and not pd.isna(shares.ordered[1])


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_margins_wide_equals_a_naive_pivot_table(aggregation):
    """margins_wide (built on factorized codes) equals the plain pandas construction, pivot_table with
    "first", including shuffled rows, an unknown step, a checkpoint and a pair with no finite margin;
    pairs come in the order of their first row."""
    rng = np.random.default_rng(9)
    ref = rng.normal(size=40)
    steps = {"checkpoint-30": 30, "checkpoint-10": 10, "final": None, "checkpoint-20": 20}
    pairs = _pairs_table({m: ref + rng.normal(size=40) for m in steps}, steps, ref).sample(frac=1, random_state=2)
    pairs.loc[pairs["model"] == "checkpoint-20", "logp_chosen"] = np.nan
    pairs.loc[pairs["pair_id"] == "7", "logp_rejected"] = np.nan
    p = pairs.copy()
    for side in ("chosen", "rejected"):
        n = np.maximum(p[f"n_tokens_{side}"], 1) if aggregation == "mean" else 1
        p[f"s_{side}"], p[f"r_{side}"] = p[f"logp_{side}"] / n, p[f"ref_logp_{side}"] / n
    p["m"], p["mref"] = p["s_chosen"] - p["s_rejected"], p["r_chosen"] - p["r_rejected"]
    naive = p.pivot_table(index="pair_id", columns="model", values="m", aggfunc="first", sort=False)
    naive = naive[["checkpoint-10", "checkpoint-30", "final"]]  # by step, unknown last; the all-NaN one gone
    naive.insert(0, "reference", p.groupby("pair_id", sort=False)["mref"].first().reindex(naive.index))
    naive.columns.name = None
    naive = naive.loc[[i for i in pd.unique(pairs["pair_id"]) if i in naive.index]]  # pairs in order of first row
    got = margins_wide(pairs, aggregation)
    assert "7" not in got.index and "checkpoint-20" not in got.columns
    pd.testing.assert_frame_equal(got, naive)
