"""The exact lab states the paper's results and checks them (arXiv:2505.23761; docs/REFERENCE.md §3–§4, docs/LAB.md)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from did_core import losses
from did_core.lab import (
    LabConfig,
    did,
    entropy,
    enumerate_sequences,
    js,
    kl,
    make_world,
    pair_losses,
    preference_probability,
    run_lab,
    sample_pairs,
    target_summary,
    temperature_for_entropy,
)

WORLDS = [
    LabConfig(),
    LabConfig(support="sequences", vocab=3, max_len=3, target_temperature=0.5),
    LabConfig(n_items=16, ref_scale=2.0, target_entropy=0.2, target_alignment=-0.5, seed=3),
]


@pytest.mark.parametrize("cfg", WORLDS)
def test_did_of_target_is_q_star(cfg: LabConfig) -> None:
    """Paper, Thm. 3.2 read backwards: π* ∝ π_ref·q*  ⇒  q_{π*/π_ref} = q*."""
    w = make_world(cfg)
    torch.testing.assert_close(did(w.log_target, w.log_ref), w.log_target_did, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cfg", WORLDS)
def test_did_encoding_rejected_distribution_satisfies_power_law(cfg: LabConfig) -> None:
    """π_l ∝ π_ref^{1+β} π*^{−β}  ⇒  q_{π_ref/π_l} = (q*)^β / Σ (q*)^β  (the power-law condition)."""
    w = make_world(cfg)
    lhs = did(w.log_ref, w.log_rejected)
    rhs = torch.log_softmax(cfg.beta * w.log_target_did, dim=-1)
    torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=0)


def test_preference_probabilities_match_paper_by_monte_carlo() -> None:
    """With y_w ~ π_ref, y_l ~ π_l (DID-encoding), an unordered pair {a, b} is seen as (a, b) with
    probability π_ref(a)π_l(b) / (π_ref(a)π_l(b) + π_ref(b)π_l(a)) = σ(β log q*(a) − β log q*(b)).
    Monte Carlo: each pair's observed share lies within 4.5 binomial standard errors."""
    cfg = LabConfig(n_items=5, beta=1.0, target_temperature=0.7, seed=7)
    w = make_world(cfg)
    chosen, rejected = sample_pairs(w, 400_000, seed=11)
    n = cfg.n_items
    counts = torch.bincount(chosen * n + rejected, minlength=n * n).reshape(n, n).double()  # (a, b) -> count
    checked = 0
    for a in range(n):
        for b in range(a + 1, n):
            total = counts[a, b] + counts[b, a]
            if total < 500:
                continue
            p = float(preference_probability(w, torch.tensor(a), torch.tensor(b)))
            se = math.sqrt(p * (1 - p) / float(total))
            assert abs(float(counts[a, b] / total) - p) < 4.5 * se + 1e-9, (a, b, float(total))
            checked += 1
    assert checked >= 8
    # The test has power: with π_l = π_ref both orders are equally likely, far from σ(β Δ log q*).
    wr = make_world(LabConfig(n_items=5, beta=1.0, target_temperature=0.7, seed=7, rejected="reference"))
    assert abs(float(preference_probability(wr, torch.tensor(0), torch.tensor(1))) - 0.5) > 0.05


@pytest.mark.slow
def test_dpo_on_did_encoding_pairs_learns_the_target() -> None:
    """Paper, §3: DPO on DID-encoding data recovers π*; a mismatched π_l does not; SimPO ends elsewhere."""
    dpo = run_lab(LabConfig())
    js0, js_dpo = float(dpo.history["js_target"][0]), float(dpo.history["js_target"][-1])
    assert js0 > 0.1
    assert js_dpo < 0.01 and js_dpo < js0 / 20
    for rejected in ("reference", "uniform"):
        other = run_lab(LabConfig(rejected=rejected))
        assert float(other.history["js_target"][-1]) > 0.1, rejected
    # π_l = π_ref carries no preference signal: DPO leaves π at π_ref.
    same = run_lab(LabConfig(rejected="reference"))
    assert abs(float(same.history["js_target"][-1]) - js0) < 0.02
    simpo = run_lab(LabConfig(loss="simpo"))
    assert float(simpo.history["js_target"][-1]) > 5 * js_dpo
    # The learned DID entropy approaches the target's.
    assert abs(float(dpo.history["did_entropy"][-1]) - float(entropy(dpo.world.log_target_did))) < 0.2


def test_sequence_support_and_ipo_run() -> None:
    res = run_lab(LabConfig(support="sequences", vocab=2, max_len=4, loss="ipo", steps=50))
    assert res.log_policy.shape == (51, 31)  # 1 + 2 + 4 + 8 + 16 sequences
    assert torch.isfinite(res.log_policy).all()
    assert res.world.items[0] == () and res.world.lengths[0] == 1 and res.world.lengths[-1] == 5


@pytest.mark.slow
def test_low_entropy_did_reinforces_more_than_high_entropy() -> None:
    """The sweep's robust result: a low-entropy target DID makes the policy's entropy fall far more
    than a high-entropy one (reinforcement); the mean log-likelihood of chosen responses (drawn from
    π_ref) moves by −KL(π_ref‖π*) ≤ 0 at convergence, whatever the entropy."""
    low = run_lab(LabConfig(target_entropy=0.3))
    high = run_lab(LabConfig(target_entropy=0.9))
    d_h = {k: float(r.history["policy_entropy"][-1] - r.history["policy_entropy"][0]) for k, r in
           (("low", low), ("high", high))}
    assert d_h["low"] < -1.0 and d_h["low"] < 4 * d_h["high"] < 0
    for r in (low, high):
        shift = float(r.history["logp_chosen"][-1] - r.history["logp_chosen"][0])
        assert shift == pytest.approx(target_summary(r.world)["chosen_logp_shift"], abs=0.15)
        assert shift < 0
    # Smoothing: a high-entropy DID spread over π_ref's tail raises the policy's entropy.
    tail = run_lab(LabConfig(target_entropy=0.9, target_alignment=-0.8))
    assert float(tail.history["policy_entropy"][-1]) > float(tail.history["policy_entropy"][0]) + 0.05


def test_metrics_against_naive_sums() -> None:
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    lq = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    p, q = lp.exp().tolist(), lq.exp().tolist()
    naive_kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    m = [(pi + qi) / 2 for pi, qi in zip(p, q)]
    naive_js = 0.5 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m)) + 0.5 * sum(
        qi * math.log(qi / mi) for qi, mi in zip(q, m))
    assert float(kl(lp, lq)) == pytest.approx(naive_kl, abs=1e-12)
    assert float(js(lp, lq)) == pytest.approx(naive_js, abs=1e-12)
    assert float(entropy(lp)) == pytest.approx(-sum(pi * math.log(pi) for pi in p), abs=1e-12)
    ratio = [pi / qi for pi, qi in zip(p, q)]
    torch.testing.assert_close(did(lp, lq).exp(), torch.tensor(ratio, dtype=torch.float64) / sum(ratio))


def test_trajectory_metrics_at_step_zero_and_unseen_mass() -> None:
    res = run_lab(LabConfig(n_items=64, n_pairs=20, steps=5))
    h = res.history
    assert float(h["did_entropy"][0]) == pytest.approx(math.log(64))  # π = π_ref: the DID is uniform
    assert float(h["kl_policy_target"][0]) == pytest.approx(float(kl(res.world.log_ref, res.world.log_target)))
    seen = set(res.chosen.tolist()) | set(res.rejected.tolist())
    unseen = [i for i in range(64) if i not in seen]
    assert float(h["unseen_mass"][0]) == pytest.approx(float(res.world.log_ref.exp()[unseen].sum()))
    assert float(h["logp_chosen"][0]) == pytest.approx(float(res.world.log_ref[res.chosen].mean()))
    assert set(res.table()) >= {"step", "js_target", "logp_chosen", "policy_entropy", "did_entropy", "loss"}


def test_dpo_loss_matches_formula_and_reference_init() -> None:
    lw, ll, rw, rl = (torch.tensor([v], dtype=torch.float64) for v in (-1.0, -2.0, -1.5, -1.8))
    one = torch.ones(1, dtype=torch.float64)
    assert float(pair_losses("dpo", lw, ll, rw, rl, one, one, 0.1)) == pytest.approx(
        -math.log(1 / (1 + math.exp(-0.1 * ((-1.0 + 1.5) - (-2.0 + 1.8))))))
    assert float(pair_losses("ipo", lw, ll, rw, rl, one, one, 0.1)) == pytest.approx((0.7 - 5.0) ** 2)
    res = run_lab(LabConfig(steps=0))
    assert float(res.history["loss"][0]) == pytest.approx(math.log(2))  # π = π_ref: every margin is 0


def test_deterministic_from_seed() -> None:
    a, b = run_lab(LabConfig(steps=20)), run_lab(LabConfig(steps=20))
    assert torch.equal(a.chosen, b.chosen) and torch.equal(a.log_policy, b.log_policy)
    c = run_lab(LabConfig(steps=20, seed=1))
    assert not torch.equal(a.world.log_ref, c.world.log_ref)


def test_temperature_for_entropy_and_enumeration() -> None:
    e = torch.randn(50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for target in (0.3, 2.0, 3.5):
        t = temperature_for_entropy(e, target)
        assert float(entropy(torch.log_softmax(-e / t, -1))) == pytest.approx(target, abs=1e-6)
    w = make_world(LabConfig(target_entropy=0.25))
    assert float(entropy(w.log_target_did)) == pytest.approx(0.25 * math.log(32), abs=1e-6)
    assert len(enumerate_sequences(3, 3)) == 1 + 3 + 9 + 27


def test_default_size_is_interactive() -> None:
    run_lab(LabConfig(steps=5))  # warm-up
    t0 = time.perf_counter()
    run_lab(LabConfig())
    assert time.perf_counter() - t0 < 2.0  # ~0.15 s alone; slack for shared CPUs


@pytest.mark.parametrize("bad", [dict(n_items=1), dict(beta=0), dict(target_entropy=1.5), dict(loss="kto"),
                                 dict(target_alignment=2.0), dict(support="sequences", vocab=50, max_len=5)])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        LabConfig(**bad)


@pytest.mark.parametrize("kind, loss_type, agg", [("dpo", "sigmoid", "sum"), ("ipo", "ipo", "sum"),
                                                  ("simpo", "simpo", "mean")])
def test_the_labs_autograd_losses_equal_did_core_losses(kind, loss_type, agg) -> None:
    """The lab trains with torch losses (it needs autograd); they are the numpy definitions of
    did_core.losses, checked here on random pairs so that the two cannot drift apart."""
    g = torch.Generator().manual_seed(3)
    lw, ll, rw, rl = (-5 * torch.rand(50, generator=g, dtype=torch.float64) for _ in range(4))
    nw, nl = (torch.randint(1, 9, (50,), generator=g).double() for _ in range(2))
    ours = pair_losses(kind, lw, ll, rw, rl, nw, nl, 0.3, gamma=0.5).numpy()
    ref = losses.preference_loss(lw.numpy(), ll.numpy(), rw.numpy(), rl.numpy(), nw.numpy(), nl.numpy(),
                                 loss_type=loss_type, beta=0.3, aggregation=agg, simpo_gamma=0.5)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
