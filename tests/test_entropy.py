"""DID entropy estimators vs naive loops, closed forms, and a numeric finite world."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from did_core.entropy import (
    bootstrap_replicates,
    did_entropy,
    effective_sample_size,
    entropy_vs_k,
    estimate_did_entropy,
    exact_did_entropy,
    log_partition_estimate,
    pair_did_entropy,
    percentile_interval,
    snis_entropy,
    snis_ess,
    summarize_samples,
)


def _naive_entropy(a):
    m = max(a)
    e = [math.exp(x - m) for x in a]
    s = sum(e)
    return -sum((x / s) * math.log(x / s) for x in e if x > 0)


def _naive_snis(d, lp):
    w = [math.exp(di - li) for di, li in zip(d, lp)]
    z_hat = sum(w) / len(w)
    return math.log(z_hat) - sum(wi * di for wi, di in zip(w, d)) / sum(w)


def test_entropy_and_ess_vs_naive():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 3, (6, 17))
    np.testing.assert_allclose(did_entropy(a), [_naive_entropy(r) for r in a], rtol=1e-12)
    ess_naive = []
    for r in a:
        q = np.exp(r - r.max()) / np.exp(r - r.max()).sum()
        ess_naive.append(1 / sum(x * x for x in q))
    np.testing.assert_allclose(effective_sample_size(a), ess_naive, rtol=1e-12)
    assert np.all(did_entropy(a) <= np.log(17) + 1e-12)
    # zero-weight entries contribute nothing; uniform weights give log K and ESS K
    assert did_entropy(np.array([0.0, -np.inf, 0.0])) == pytest.approx(math.log(2))
    assert effective_sample_size(np.zeros(9)) == pytest.approx(9)
    assert exact_did_entropy(np.zeros(5)) == pytest.approx(math.log(5))
    with pytest.raises(ValueError):
        exact_did_entropy(np.zeros((2, 2)))


def test_snis_vs_naive_and_closed_forms():
    rng = np.random.default_rng(1)
    d, lp = rng.normal(0, 2, (4, 30)), -rng.gamma(2, 3, (4, 30))
    np.testing.assert_allclose(snis_entropy(d, lp), [_naive_snis(x, y) for x, y in zip(d, lp)], rtol=1e-10)
    w = np.exp(d - lp)
    wn = w / w.sum(-1, keepdims=True)
    np.testing.assert_allclose(snis_ess(d, lp), 1 / (wn ** 2).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(log_partition_estimate(d, lp), np.log(w.mean(-1)), rtol=1e-12)
    # Proposal = q itself: ω ≡ Z, so Ĥ is the plain Monte Carlo −mean(log q(y_i)).
    support = rng.normal(0, 1.5, 40)
    log_q = support - np.log(np.exp(support).sum())
    idx = rng.integers(0, 40, 25)
    assert snis_entropy(support[idx], log_q[idx]) == pytest.approx(-log_q[idx].mean(), rel=1e-12)


def test_pair_entropy_is_binary_entropy():
    dw, dl = np.array([0.0, 2.0, -1.0, 30.0]), np.array([0.0, -1.0, 0.5, 0.0])
    p = 1 / (1 + np.exp(-(dw - dl)))
    naive = [-(x * math.log(x) + (1 - x) * math.log(1 - x)) if 0 < x < 1 else 0.0 for x in p]
    np.testing.assert_allclose(pair_did_entropy(dw, dl), naive, atol=1e-12)
    assert pair_did_entropy([0.0], [0.0])[0] == pytest.approx(math.log(2))


def test_bootstrap_vs_naive_loop():
    rng = np.random.default_rng(2)
    d, lp = rng.normal(0, 1, 12), rng.normal(-5, 1, 12)
    reps = bootstrap_replicates(d, lp, estimator="snis", n_boot=50, rng=np.random.default_rng(7))
    idx = np.random.default_rng(7).integers(0, 12, (50, 12))
    np.testing.assert_allclose(reps, [_naive_snis(d[i], lp[i]) for i in idx], rtol=1e-10)
    reps_r = bootstrap_replicates(d, estimator="restricted", n_boot=50, rng=np.random.default_rng(7))
    np.testing.assert_allclose(reps_r, [_naive_entropy(d[i]) for i in idx], rtol=1e-10)
    lo, hi = percentile_interval(reps, 0.9)
    assert lo == pytest.approx(np.quantile(reps, 0.05)) and hi == pytest.approx(np.quantile(reps, 0.95))


def test_estimate_is_seeded_and_validated():
    rng = np.random.default_rng(3)
    d, lp = rng.normal(0, 1, 64), rng.normal(-5, 1, 64)
    a = estimate_did_entropy(d, lp, seed=5, n_boot=200)
    assert a == estimate_did_entropy(d, lp, seed=5, n_boot=200)
    assert a.ci_low <= a.ci_high and a.k == 64 and 1 <= a.ess <= 64
    assert a.estimate == pytest.approx(float(snis_entropy(d, lp)))
    r = estimate_did_entropy(d, estimator="restricted", n_boot=200)
    assert r.estimate == pytest.approx(float(did_entropy(d)))
    with pytest.raises(ValueError):
        estimate_did_entropy(d)  # SNIS without the proposal's log-probs
    with pytest.raises(ValueError):
        estimate_did_entropy(d, lp, level=1.5)


def test_entropy_vs_k_uses_prefixes():
    rng = np.random.default_rng(4)
    d, lp = rng.normal(0, 1, 40), rng.normal(-5, 1, 40)
    tab = entropy_vs_k(d, lp, n_boot=100)
    assert sorted(set(tab["k"])) == [2, 4, 8, 16, 32, 40]
    row = tab[(tab.k == 8) & (tab.estimator == "snis")].iloc[0]
    assert row.estimate == pytest.approx(float(snis_entropy(d[:8], lp[:8])))
    assert set(entropy_vs_k(d, ks=[5]).estimator) == {"restricted"}


def test_snis_converges_on_numeric_world_restricted_does_not():
    """Random π, π_ref over 60 responses: Ĥ → H(q) as K grows; H_S keeps growing like log K."""
    rng = np.random.default_rng(5)
    lp_pi = np.log(rng.dirichlet(np.full(60, 2.0)))
    lp_ref = np.log(rng.dirichlet(np.full(60, 2.0)))
    d = lp_pi - lp_ref
    exact = exact_did_entropy(d)
    errs, h_s = [], []
    for k in (16, 256, 4096):
        idx = rng.choice(60, size=(100, k), p=np.exp(lp_pi))
        errs.append(np.mean(np.abs(snis_entropy(d[idx], lp_pi[idx]) - exact)))
        h_s.append(did_entropy(d[idx]).mean())
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.1
    assert h_s[0] < h_s[1] < h_s[2]


def test_summarize_samples():
    rng = np.random.default_rng(6)
    df = pd.DataFrame({"prompt_index": np.repeat([0, 1], 20), "log_ratio": rng.normal(0, 1, 40),
                       "logp_proposal": rng.normal(-4, 1, 40)})
    s = summarize_samples(df, n_boot=100)
    assert list(s.prompt_index) == [0, 1] and list(s.k) == [20, 20]
    g = df[df.prompt_index == 1]
    assert s.snis_entropy[1] == pytest.approx(float(snis_entropy(g.log_ratio, g.logp_proposal)))
    assert s.restricted_entropy[1] == pytest.approx(float(did_entropy(g.log_ratio)))
