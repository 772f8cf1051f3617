"""Losses and per-pair quantities: hand-worked numbers, naive loops, and TRL 1.16's own loss code."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from did_core.losses import LOSS_TYPES, pair_losses, pair_quantities, preference_loss

# One hand-worked pair: ℓ_π(y_w) = −10 over 4 tokens, ℓ_π(y_l) = −12 over 2, reference −11 and −11.
# Sum: δ = (−10+11) − (−12+11) = 2.  Mean: δ = (−2.5+2.75) − (−6+5.5) = 0.75.
HAND = dict(logp_chosen=[-10.0], logp_rejected=[-12.0], ref_logp_chosen=[-11.0], ref_logp_rejected=[-11.0],
            n_tokens_chosen=[4], n_tokens_rejected=[2])


@pytest.mark.parametrize("loss_type, kwargs, expected", [
    ("sigmoid", dict(beta=0.1), math.log1p(math.exp(-0.2))),                 # −log σ(0.1·2) = 0.598139
    ("hinge", dict(beta=0.1), 0.8),                                           # max(0, 1 − 0.2)
    ("ipo", dict(beta=0.1), (0.75 - 5.0) ** 2),                               # (δ̄ − 1/(2β))² = 18.0625
    ("ipo", dict(beta=0.1, aggregation="sum"), (2.0 - 5.0) ** 2),
    # rDPO: [(1−ε)L(z) − εL(−z)]/(1−2ε) = L(z) − εz/(1−2ε) since L(−z) = L(z) + z; z = 0.2, ε = 0.1
    ("robust", dict(beta=0.1, label_smoothing=0.1), math.log1p(math.exp(-0.2)) - 0.1 * 0.2 / 0.8),
    ("robust", dict(beta=0.1, label_smoothing=0.0), math.log1p(math.exp(-0.2))),
    # SimPO: −log σ(β(ℓ̄_w − ℓ̄_l) − γ) = −log σ(2·(−2.5+6) − 0.5) = −log σ(6.5)
    ("simpo", dict(beta=2.0, simpo_gamma=0.5), math.log1p(math.exp(-6.5))),
    ("simpo", dict(beta=2.0, simpo_gamma=0.5, aggregation="sum"), math.log1p(math.exp(-(2.0 * 2.0 - 0.5)))),
    ("sigmoid", dict(beta=0.1, aggregation="mean"), math.log1p(math.exp(-0.075))),
])
def test_hand_worked(loss_type, kwargs, expected):
    got = preference_loss(**HAND, loss_type=loss_type, **kwargs)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(expected, abs=1e-12)


def _random_pairs(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    nw, nl = rng.integers(0, 30, n), rng.integers(1, 30, n)
    return pd.DataFrame({
        "pair_id": [str(i) for i in range(n)], "model": "ckpt", "step": 10,
        "logp_chosen": -rng.gamma(2, 10, n), "logp_rejected": -rng.gamma(2, 10, n),
        "ref_logp_chosen": -rng.gamma(2, 10, n), "ref_logp_rejected": -rng.gamma(2, 10, n),
        "n_tokens_chosen": nw, "n_tokens_rejected": nl,
    })


def _naive_loss(row, loss_type, beta, agg, eps, gamma):
    def s(lp, n):
        return lp / max(n, 1) if agg == "mean" else lp
    w, l_ = s(row.logp_chosen, row.n_tokens_chosen), s(row.logp_rejected, row.n_tokens_rejected)
    if loss_type == "simpo":
        return -math.log(1 / (1 + math.exp(-(beta * (w - l_) - gamma))))
    delta = (w - s(row.ref_logp_chosen, row.n_tokens_chosen)) - (l_ - s(row.ref_logp_rejected, row.n_tokens_rejected))
    sig = 1 / (1 + math.exp(-beta * delta))
    if loss_type == "sigmoid":
        return -math.log(sig)
    if loss_type == "hinge":
        return max(0.0, 1 - beta * delta)
    if loss_type == "ipo":
        return (delta - 1 / (2 * beta)) ** 2
    return (-(1 - eps) * math.log(sig) + eps * math.log(1 - sig)) / (1 - 2 * eps)


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_losses_vs_naive(agg):
    df = _random_pairs(50, 1)
    # β small enough that the naive sigmoid does not underflow
    got = pair_losses(df, beta=0.05, aggregation=agg, label_smoothing=0.2, simpo_gamma=0.3)
    for lt in LOSS_TYPES:
        naive = [_naive_loss(r, lt, 0.05, agg, 0.2, 0.3) for r in df.itertuples()]
        np.testing.assert_allclose(got[f"loss_{lt}"], naive, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_pair_quantities_vs_naive(agg):
    df = _random_pairs(40, 2)
    beta = 0.1
    q = pair_quantities(df, beta, agg)
    assert list(q["pair_id"]) == list(df["pair_id"])
    for i, r in enumerate(df.itertuples()):
        def s(lp, n):
            return lp / max(n, 1) if agg == "mean" else lp
        dw = s(r.logp_chosen, r.n_tokens_chosen) - s(r.ref_logp_chosen, r.n_tokens_chosen)
        dl = s(r.logp_rejected, r.n_tokens_rejected) - s(r.ref_logp_rejected, r.n_tokens_rejected)
        m = s(r.logp_chosen, r.n_tokens_chosen) - s(r.logp_rejected, r.n_tokens_rejected)
        mref = s(r.ref_logp_chosen, r.n_tokens_chosen) - s(r.ref_logp_rejected, r.n_tokens_rejected)
        row = q.iloc[i]
        assert row.reward_chosen == pytest.approx(beta * dw)
        assert row.reward_rejected == pytest.approx(beta * dl)
        assert row.reward_margin == pytest.approx(beta * (m - mref))
        assert row.log_margin == pytest.approx(m)
        assert row.ref_log_margin == pytest.approx(mref)
        assert row.dpo_loss == pytest.approx(-math.log(1 / (1 + math.exp(-beta * (m - mref)))))
        assert bool(row.accuracy) == (m > mref)
        assert bool(row.displaced) == (dw < 0 and dl < 0)


def test_validation():
    with pytest.raises(ValueError):
        preference_loss(**HAND, loss_type="kto")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        preference_loss(**HAND, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError):
        preference_loss([-1.0], [-2.0], loss_type="ipo")
    with pytest.raises(ValueError):
        pair_quantities(pd.DataFrame({"logp_chosen": [1.0]}), 0.1)


# --- TRL 1.16's own loss code, run on the same numbers ----------------------------------------

class _FakeOutputs(SimpleNamespace):
    pass


def _trl_dpo_loss(loss_type: str, beta: float, eps: float, lw, ll, rw, rl, nw, nl) -> float:
    """Run `DPOTrainer._compute_loss` on one pair whose per-token log-probs we choose.

    Tokens of a completion share its log-prob equally; the prompt is one masked token.
    """
    from trl.trainer.dpo_trainer import DPOTrainer

    t = max(nw, nl) + 1
    mask = torch.zeros(2, t, dtype=torch.long)
    mask[0, 1:nw + 1] = 1
    mask[1, 1:nl + 1] = 1
    tok_logps = torch.zeros(2, t - 1, dtype=torch.float64)
    tok_logps[0, :nw] = lw / nw
    tok_logps[1, :nl] = ll / nl

    def model(**kwargs):
        assert kwargs["fused_lm_head"]
        z = torch.zeros(2, t - 1)
        return _FakeOutputs(log_probs=tok_logps, entropy=z, mean_logits=z, is_top1=z.bool())

    acc = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    fake = SimpleNamespace(
        model=SimpleNamespace(training=False), accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0],
        beta=beta, label_smoothing=eps, use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.ones(2, t, dtype=torch.long), "attention_mask": torch.ones(2, t, dtype=torch.long),
              "completion_mask": mask, "ref_chosen_logps": torch.tensor([rw], dtype=torch.float64),
              "ref_rejected_logps": torch.tensor([rl], dtype=torch.float64)}
    return float(DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False))


def test_matches_trl_dpo_trainer():
    pytest.importorskip("trl")
    df = _random_pairs(6, 3)
    df["n_tokens_chosen"] = np.maximum(df["n_tokens_chosen"], 1)
    for lt, eps in [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.15)]:
        ours = preference_loss(*(df[c] for c in ("logp_chosen", "logp_rejected", "ref_logp_chosen",
                                                 "ref_logp_rejected", "n_tokens_chosen", "n_tokens_rejected")),
                               loss_type=lt, beta=0.05, label_smoothing=eps)
        for i, r in enumerate(df.itertuples()):
            trl = _trl_dpo_loss(lt, 0.05, eps, r.logp_chosen, r.logp_rejected, r.ref_logp_chosen,
                                r.ref_logp_rejected, r.n_tokens_chosen, r.n_tokens_rejected)
            assert ours[i] == pytest.approx(trl, rel=1e-9, abs=1e-12), (lt, i)


def test_matches_trl_simpo():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    df = _random_pairs(8, 4)
    nw = np.maximum(df["n_tokens_chosen"].to_numpy(), 1)
    nl = df["n_tokens_rejected"].to_numpy()
    fake = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=0.7, beta=2.0, label_smoothing=0.0,
                           accelerator=SimpleNamespace(device=torch.device("cpu")))
    # CPOTrainer passes length-averaged log-probs for SimPO (`average_log_prob=True`).
    trl, _, _ = cpo.CPOTrainer.cpo_loss(fake, torch.tensor(df["logp_chosen"].to_numpy() / nw),
                                         torch.tensor(df["logp_rejected"].to_numpy() / nl))
    ours = preference_loss(df["logp_chosen"], df["logp_rejected"], n_tokens_chosen=nw, n_tokens_rejected=nl,
                           loss_type="simpo", beta=2.0, simpo_gamma=0.7)
    np.testing.assert_allclose(ours, trl.numpy(), rtol=1e-9)
