"""Checkpoint comparison vs a naive per-pair loop."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from did_core.compare import (
    NORMAL,
    bootstrap_mean_ci,
    compare_checkpoints,
    mean_interval,
    normal_mean_ci,
    reference_rows,
    summarize_comparison,
    top_movers,
)
from did_core.run_settings import RunSettings


def _pairs(n: int = 25, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ref_w, ref_l = -rng.gamma(3, 5, n), -rng.gamma(3, 5, n)
    nw, nl = rng.integers(1, 20, n), rng.integers(1, 20, n)
    rows = []
    for step in (100, 200):
        for i in range(n):
            if step == 200 and i == 3:
                continue  # a pair missing from B
            rows.append(dict(pair_id=f"p{i}", model=f"checkpoint-{step}", step=step,
                             logp_chosen=ref_w[i] + rng.normal(0, 3), logp_rejected=ref_l[i] + rng.normal(-1, 3),
                             ref_logp_chosen=ref_w[i], ref_logp_rejected=ref_l[i], n_tokens_chosen=nw[i],
                             n_tokens_rejected=nl[i]))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("a, b, agg", [("checkpoint-100", "checkpoint-200", "sum"),
                                       ("reference", "checkpoint-200", "mean"),
                                       ("checkpoint-200", "reference", "sum")])
def test_compare_vs_naive(a, b, agg):
    pairs, beta = _pairs(), 0.2
    t = compare_checkpoints(pairs, a, b, RunSettings(beta=beta), agg)
    assert "p3" not in t.index and len(t) == 24

    def get(model, pid):
        r = pairs[(pairs.pair_id == pid) & (pairs.model == ("checkpoint-100" if model == "reference" else model))]
        r = r.iloc[0]
        div_w, div_l = (max(r.n_tokens_chosen, 1), max(r.n_tokens_rejected, 1)) if agg == "mean" else (1, 1)
        ref = (r.ref_logp_chosen / div_w, r.ref_logp_rejected / div_l)
        own = ref if model == "reference" else (r.logp_chosen / div_w, r.logp_rejected / div_l)
        return own, ref

    for pid, row in t.iterrows():
        (aw, al), (rw, rl) = get(a, pid)
        (bw, bl), _ = get(b, pid)
        assert row.delta_logp_chosen == pytest.approx(bw - aw)
        assert row.delta_log_margin == pytest.approx((bw - bl) - (aw - al))
        loss_b = math.log1p(math.exp(-beta * ((bw - bl) - (rw - rl))))
        assert row.dpo_loss_b == pytest.approx(loss_b)
        dw, dl = bw - aw, bl - al
        q = math.exp(dw) / (math.exp(dw) + math.exp(dl))
        assert row.q_ba_chosen == pytest.approx(q)
        h = -(q * math.log(q) + (1 - q) * math.log(1 - q)) if 0 < q < 1 else 0.0
        assert row.did_entropy_ba == pytest.approx(h, abs=1e-12)


def test_reference_rows_are_the_reference_as_a_checkpoint():
    pairs = _pairs()
    ref = reference_rows(pairs)
    assert list(ref["pair_id"]) == list(pairs["pair_id"].drop_duplicates()) and set(ref["model"]) == {"reference"}
    assert (ref["step"] == 0).all()
    assert list(ref["logp_chosen"]) == list(ref["ref_logp_chosen"])
    assert list(ref["logp_rejected"]) == list(ref["ref_logp_rejected"])


def test_top_movers_and_summary():
    t = compare_checkpoints(_pairs(), "checkpoint-100", "checkpoint-200", RunSettings(beta=0.1))
    up, down = top_movers(t, n=5)
    vals = t.delta_log_margin
    assert list(up.delta_log_margin) == sorted(vals[vals > 0], reverse=True)[:5]
    assert list(down.delta_log_margin) == sorted(vals[vals < 0])[:5]
    s = summarize_comparison(t, n_boot=300)
    assert s.n == 24 and s.mean_delta_log_margin == pytest.approx(vals.mean())
    assert s.share_both_down == pytest.approx(np.mean([(w < 0) and (r < 0) for w, r in
                                                       zip(t.did_ba_chosen, t.did_ba_rejected)]))
    assert s.did_entropy_ci_low <= s.mean_did_entropy_ba <= s.did_entropy_ci_high
    assert 1.0 <= s.mean_pair_ess <= 2.0 and 0 <= s.mean_did_entropy_ba <= math.log(2)
    assert s.did_entropy_ci_method == "bootstrap (300 resamples)"
    fast = summarize_comparison(t, n_boot=300, bootstrap_max_n=10)
    assert fast.did_entropy_ci_method == NORMAL and fast.mean_did_entropy_ba == s.mean_did_entropy_ba
    assert fast.did_entropy_ci_low <= fast.mean_did_entropy_ba <= fast.did_entropy_ci_high
    with pytest.raises(ValueError):
        compare_checkpoints(_pairs(), "checkpoint-100", "checkpoint-999", RunSettings(beta=0.1))


def test_bootstrap_mean_ci_vs_naive():
    v = np.random.default_rng(1).normal(size=30)
    lo, hi = bootstrap_mean_ci(v, n_boot=200, level=0.9, seed=4)
    idx = np.random.default_rng(4).integers(0, 30, size=(200, 30))
    means = [sum(v[i]) / 30 for i in idx]
    assert lo == pytest.approx(np.quantile(means, 0.05)) and hi == pytest.approx(np.quantile(means, 0.95))
    assert all(np.isnan(bootstrap_mean_ci([])))


def test_bootstrap_mean_ci_chunked_is_the_one_draw():
    """Resamples drawn in row chunks (here 1,000·3,000 indices > one chunk) give the one-draw interval."""
    v = np.random.default_rng(2).exponential(size=3000)
    idx = np.random.default_rng(5).integers(0, 3000, size=(1000, 3000))
    want = np.quantile(v[idx].mean(-1), [0.025, 0.975])
    assert bootstrap_mean_ci(v, n_boot=1000, seed=5) == pytest.approx(tuple(want), abs=1e-12)


def test_normal_mean_ci_vs_naive():
    v = [0.1, 0.4, np.nan, 0.3, 0.2]
    lo, hi = normal_mean_ci(v, level=0.95)
    x = [0.1, 0.4, 0.3, 0.2]
    half = 1.959963984540054 * math.sqrt(sum((a - 0.25) ** 2 for a in x) / 3) / 2
    assert (lo, hi) == pytest.approx((0.25 - half, 0.25 + half))
    assert all(np.isnan(normal_mean_ci([]))) and normal_mean_ci([0.3]) == (0.3, 0.3)


@pytest.mark.parametrize("dist", ["uniform", "skewed"])
def test_mean_interval_normal_agrees_with_the_bootstrap(dist):
    """At moderate n the normal interval's endpoints match the percentile bootstrap's (4,000 resamples)
    to well under a tenth of the interval's half-width; the method names which one was used."""
    rng = np.random.default_rng(11)
    v = rng.uniform(0, math.log(2), 6000) if dist == "uniform" else math.log(2) * rng.beta(0.3, 3.0, 6000)
    boot = mean_interval(v, n_boot=4000, seed=3, bootstrap_max_n=10_000)
    norm = mean_interval(v, n_boot=4000, seed=3, bootstrap_max_n=5000)
    assert boot["method"] == "bootstrap (4,000 resamples)" and norm["method"] == NORMAL
    assert boot["n"] == norm["n"] == 6000 and boot["mean"] == norm["mean"] == pytest.approx(v.mean())
    half = (norm["hi"] - norm["lo"]) / 2
    assert abs(norm["lo"] - boot["lo"]) < 0.1 * half and abs(norm["hi"] - boot["hi"]) < 0.1 * half
    empty = mean_interval([np.nan])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("mean", "lo", "hi"))
