"""The view models (did_ui/views.py) on tiny tables: derived columns, summaries, compare, ordering,
the power-law fit and its reading, histogram bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from did_core.run_settings import RunSettings
from did_ui import views


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
