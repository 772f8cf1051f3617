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

from did_core.losses import (
    DERIVED_COLUMNS,
    F_DIVERGENCE_LOSS_TYPES,
    F_DIVERGENCE_TYPES,
    LOSS_TYPES,
    PAIR_COLUMNS,
    PAIRS_COLUMNS,
    TRL_LOSS_TYPES,
    UNSUPPORTED_LOSS_TYPES,
    VIEW_COLUMNS,
    f_divergence_scores,
    pair_losses,
    pair_table,
    preference_loss,
    trainer_loss,
    trainer_loss_terms,
)
from did_core.run_settings import RunSettings

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
def test_pair_table_vs_naive(agg):
    """Every derived column of `pair_table` against a hand computation, row by row: the log-prob
    columns per token for "mean" and everything but `loss` after them; `loss` the run's own loss
    type (here IPO + ½·sigmoid, TRL's formulas by hand) from the summed log-probs."""
    df = _random_pairs(40, 2).assign(did_entropy_chosen=0.5, numerics="exact")
    beta = 0.1
    rs = RunSettings(beta=beta, loss_type=("ipo", "sigmoid"), loss_weights=(1.0, 0.5))
    q = pair_table(df, rs, agg)
    assert list(q["pair_id"]) == list(df["pair_id"]) and (q["did_entropy_chosen"] == 0.5).all()
    assert set(q.columns) == set(df.columns) | set(DERIVED_COLUMNS)
    assert list(q.columns[:3]) == ["pair_id", "model", "step"] and list(q.columns[-len(VIEW_COLUMNS):]) == list(VIEW_COLUMNS)
    assert list(q.columns[-len(VIEW_COLUMNS) - 3:-len(VIEW_COLUMNS)]) == ["accuracy", "loss", "numerics"]
    for i, r in enumerate(df.itertuples()):
        def s(lp, n):
            return lp / max(n, 1) if agg == "mean" else lp
        lw, ll = s(r.logp_chosen, r.n_tokens_chosen), s(r.logp_rejected, r.n_tokens_rejected)
        rw, rl = s(r.ref_logp_chosen, r.n_tokens_chosen), s(r.ref_logp_rejected, r.n_tokens_rejected)
        dw, dl = lw - rw, ll - rl
        m, mref = lw - ll, rw - rl
        sum_dw = r.logp_chosen - r.ref_logp_chosen
        sum_dl = r.logp_rejected - r.ref_logp_rejected
        ipo = (sum_dw / max(r.n_tokens_chosen, 1) - sum_dl / max(r.n_tokens_rejected, 1) - 1 / (2 * beta)) ** 2
        sig = math.log1p(math.exp(-beta * (sum_dw - sum_dl)))
        row = q.iloc[i]
        assert (row.logp_chosen, row.logp_rejected) == pytest.approx((lw, ll))
        assert (row.ref_logp_chosen, row.ref_logp_rejected) == pytest.approx((rw, rl))
        assert row.log_ratio_chosen == pytest.approx(dw) and row.log_ratio_rejected == pytest.approx(dl)
        assert row.reward_chosen == pytest.approx(beta * dw)
        assert row.reward_rejected == pytest.approx(beta * dl)
        assert row.reward_margin == pytest.approx(beta * (m - mref))
        assert row.log_margin == pytest.approx(m)
        assert row.ref_log_margin == pytest.approx(mref)
        assert row.dpo_loss == pytest.approx(-math.log(1 / (1 + math.exp(-beta * (m - mref)))))
        assert row.loss == pytest.approx(ipo + 0.5 * sig)
        assert bool(row.accuracy) == (m > mref)
        assert bool(row.chosen_down) == (dw < 0) and bool(row.rejected_down) == (dl < 0)
        assert bool(row.displaced) == (dw < 0 and dl < 0)


def test_pair_table_orders_the_export_columns_and_recomputes_derived_ones():
    """A stored-numbers table gets the export contract's columns first; a table that already has
    derived columns (a pair_table itself, or a hand-made one) gets them computed anew."""
    df = _random_pairs(5, 7)
    rs = RunSettings(beta=0.2)
    once = pair_table(df, rs)
    assert list(once.columns[:15]) == PAIRS_COLUMNS[:15]
    stale = once.assign(reward_margin=99.0, loss=99.0)
    pd.testing.assert_frame_equal(pair_table(stale, rs), once)
    assert pair_table(df.iloc[:0], rs).empty


def test_validation():
    with pytest.raises(ValueError):
        preference_loss(**HAND, loss_type="kto")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        preference_loss(**HAND, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError):
        preference_loss([-1.0], [-2.0], loss_type="ipo")
    with pytest.raises(ValueError):
        pair_table(pd.DataFrame({"logp_chosen": [1.0]}), RunSettings(beta=0.1))


# --- TRL 1.16's own loss code, run on the same numbers ----------------------------------------

class _FakeOutputs(SimpleNamespace):
    pass


def _trl_dpo_loss(lw, ll, rw, rl, nw, nl, *, loss_types=("sigmoid",), loss_weights=None, beta=0.1,
                  label_smoothing=0.0, f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5,
                  discopop_tau=0.05, ld_alpha=None, dtype=torch.float64) -> float:
    """Run `DPOTrainer._compute_loss` on a batch of pairs (scalars: one pair) whose per-token log-probs we choose.

    Tokens of a completion share its log-prob equally; the prompt is one masked token; the batch is laid
    out [chosen_1..chosen_B, rejected_1..rejected_B] as TRL's collator does. The default torch dtype is set
    to `dtype` meanwhile, so TRL's own `torch.tensor(label_smoothing)` (exo_pair) is float64 too.
    """
    from trl.trainer.dpo_trainer import DPOTrainer

    lw, ll, rw, rl = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (lw, ll, rw, rl))
    nw, nl = (np.atleast_1d(np.asarray(x)).astype(int) for x in (nw, nl))
    b = len(lw)
    t = int(max(nw.max(), nl.max())) + 1
    mask = torch.zeros(2 * b, t, dtype=torch.long)
    tok_logps = torch.zeros(2 * b, t - 1, dtype=dtype)
    for row, (lp, n) in enumerate([*zip(lw, nw, strict=True), *zip(ll, nl, strict=True)]):
        assert n > 0 or lp == 0.0, "a completion without tokens has log-prob 0"
        mask[row, 1:n + 1] = 1
        if n:
            tok_logps[row, :n] = lp / n

    def model(**kwargs):
        assert kwargs["fused_lm_head"]
        z = torch.zeros(2 * b, t - 1, dtype=dtype)
        return _FakeOutputs(log_probs=tok_logps, entropy=z, mean_logits=z, is_top1=z.bool())

    acc = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    fake = SimpleNamespace(
        model=SimpleNamespace(training=False), accelerator=acc, aux_loss_enabled=False, ld_alpha=ld_alpha,
        precompute_ref_logps=True, f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef, loss_types=list(loss_types),
        loss_weights=list(loss_weights) if loss_weights is not None else [1.0] * len(loss_types),
        beta=beta, label_smoothing=label_smoothing, use_weighting=False,
        args=SimpleNamespace(discopop_tau=discopop_tau),  # TRL reads τ from self.args
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.ones(2 * b, t, dtype=torch.long),
              "attention_mask": torch.ones(2 * b, t, dtype=torch.long),
              "completion_mask": mask, "ref_chosen_logps": torch.tensor(rw, dtype=dtype),
              "ref_rejected_logps": torch.tensor(rl, dtype=dtype)}
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return float(DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False))
    finally:
        torch.set_default_dtype(old)


def test_matches_trl_dpo_trainer():
    pytest.importorskip("trl")
    df = _random_pairs(6, 3)
    df["n_tokens_chosen"] = np.maximum(df["n_tokens_chosen"], 1)
    for lt, eps in [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.15)]:
        ours = preference_loss(*(df[c] for c in ("logp_chosen", "logp_rejected", "ref_logp_chosen",
                                                 "ref_logp_rejected", "n_tokens_chosen", "n_tokens_rejected")),
                               loss_type=lt, beta=0.05, label_smoothing=eps)
        for i, r in enumerate(df.itertuples()):
            trl = _trl_dpo_loss(r.logp_chosen, r.logp_rejected, r.ref_logp_chosen, r.ref_logp_rejected,
                                r.n_tokens_chosen, r.n_tokens_rejected, loss_types=[lt], beta=0.05,
                                label_smoothing=eps)
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


# --- Every per-pair DPOTrainer loss type (`trainer_loss`) against TRL 1.16 ---------------------------

def _require_trl():
    return pytest.importorskip("trl.trainer.dpo_trainer")


def _trl_pairs(n: int, seed: int) -> pd.DataFrame:
    """Pairs whose log-probs are multiples of 1/64 with per-token values too, so TRL's token sums are exact.

    Log-ratios ~ N(0, 2) (rounded to 1/64): the f-divergence scores stay in a range where no loss saturates.
    """
    rng = np.random.default_rng(seed)
    nw, nl = rng.integers(1, 25, n), rng.integers(1, 25, n)
    lw = -rng.integers(16, 200, n) / 64 * nw
    ll = -rng.integers(16, 200, n) / 64 * nl
    dw, dl = np.round(rng.normal(0, 2, n) * 64) / 64, np.round(rng.normal(0, 2, n) * 64) / 64
    return pd.DataFrame({"logp_chosen": lw, "logp_rejected": ll, "ref_logp_chosen": lw - dw,
                         "ref_logp_rejected": ll - dl, "n_tokens_chosen": nw, "n_tokens_rejected": nl})


def _cols(df):
    return [df[c].to_numpy() for c in PAIR_COLUMNS]


# ε where the loss reads it (TRL ignores label_smoothing elsewhere; exo_pair needs ε > 0)
_EPS = {"robust": 0.15, "exo_pair": 1e-3}
_TRL_CASES = [(lt, f) for lt in TRL_LOSS_TYPES
              for f in (F_DIVERGENCE_TYPES if lt in F_DIVERGENCE_LOSS_TYPES else ("reverse_kl",))]


def test_supported_sets_match_trl():
    """Our lists as read from TRL 1.16's `DPOTrainer.__init__` / `_compute_loss`."""
    assert set(TRL_LOSS_TYPES) | {"aot", "aot_unpaired"} == {
        "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
        "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"}
    assert F_DIVERGENCE_LOSS_TYPES == {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop",
                                       "sft"}
    assert set(UNSUPPORTED_LOSS_TYPES) == {"aot", "aot_unpaired", "use_weighting", "ld_alpha"}
    assert set(LOSS_TYPES) - {"simpo"} <= set(TRL_LOSS_TYPES)


@pytest.mark.parametrize("loss_type, f_div", _TRL_CASES)
def test_trainer_loss_matches_trl_per_pair(loss_type, f_div):
    """One pair per TRL batch, so TRL's batch mean is that pair's loss."""
    _require_trl()
    df = _trl_pairs(10, seed=11 + TRL_LOSS_TYPES.index(loss_type))
    kw = dict(loss_types=[loss_type], beta=0.1, label_smoothing=_EPS.get(loss_type, 0.0), f_divergence_type=f_div,
              discopop_tau=0.05)
    # α-divergence: TRL's clamp table has no float64 entry (float64 raises KeyError) and it does the exp in
    # float32 anyway, so TRL runs in float32 here, on inputs exact in float32, at float32 tolerance.
    alphas = (0.5, 1.5) if f_div == "alpha_divergence" else (0.5,)
    for alpha in alphas:
        ours = trainer_loss(*_cols(df), f_alpha_divergence_coef=alpha, **kw)
        assert ours.shape == (len(df),) and ours.dtype == np.float64
        for i, r in enumerate(df.itertuples()):
            if f_div == "alpha_divergence":
                trl = _trl_dpo_loss(*r[1:], f_alpha_divergence_coef=alpha, dtype=torch.float32, **kw)
                assert ours[i] == pytest.approx(trl, rel=1e-5, abs=1e-6), (alpha, i)
            else:
                trl = _trl_dpo_loss(*r[1:], f_alpha_divergence_coef=alpha, **kw)
                assert ours[i] == pytest.approx(trl, rel=1e-9, abs=1e-12), i


def test_trainer_loss_alpha_divergence_limit_is_reverse_kl():
    """|α − 1| < 1e-6 falls back to reverse KL before TRL's float32 path, so float64 parity holds."""
    _require_trl()
    df = _trl_pairs(8, 21)
    for lt in ("sigmoid", "ipo", "discopop"):
        kw = dict(loss_types=[lt], f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0 + 1e-7)
        ours = trainer_loss(*_cols(df), **kw)
        np.testing.assert_allclose(ours, trainer_loss(*_cols(df), loss_types=[lt]), rtol=0, atol=0)
        for i, r in enumerate(df.itertuples()):
            assert ours[i] == pytest.approx(_trl_dpo_loss(*r[1:], **kw), rel=1e-9, abs=1e-12)


def test_trainer_loss_alpha_divergence_clamp():
    """(α−1)·d = −0.5·(−200) = 100 > 80: TRL clamps the exponent at 80, so do we."""
    _require_trl()
    row = (-210.0, -20.0, -10.0, -20.5, 8, 4)  # d_w = −200, d_l = 0.5
    clamped = f_divergence_scores([-200.0], "alpha_divergence", 0.5)[0]
    assert clamped == pytest.approx(-2.0 * math.expm1(80.0), rel=1e-15)
    for lt in ("sigmoid", "hinge", "robust", "exo_pair", "sigmoid_norm"):
        kw = dict(loss_types=[lt], beta=0.1, label_smoothing=_EPS.get(lt, 0.0), f_divergence_type="alpha_divergence")
        ours = trainer_loss(*([v] for v in row), **kw)[0]
        assert np.isfinite(ours)
        assert ours == pytest.approx(_trl_dpo_loss(*row, dtype=torch.float32, **kw), rel=1e-5)
    # without the clamp the sigmoid loss would be β·2(e^{100} − 1) ≫ β·2(e^{80} − 1)
    assert trainer_loss(*([v] for v in row), f_divergence_type="alpha_divergence")[0] < 0.1 * 2 * math.exp(81)


@pytest.mark.parametrize("loss_types, weights, f_div", [
    (["sigmoid", "sft"], [1.0, 0.3], "reverse_kl"),
    (["ipo", "hinge"], [0.5, 2.0], "reverse_kl"),
    (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], "reverse_kl"),  # MPO-style mix
    (["robust", "discopop", "sigmoid_norm"], None, "js_divergence"),
    (["exo_pair", "ipo"], [1.0, 0.1], "forward_kl"),
    (["apo_zero", "sppo_hard", "nca_pair", "apo_down"], [1.0, 0.01, 0.5, 2.0], "reverse_kl"),
])
def test_trainer_loss_weighted_combination_matches_trl(loss_types, weights, f_div):
    _require_trl()
    df = _trl_pairs(8, 31)
    kw = dict(loss_types=loss_types, loss_weights=weights, beta=0.2, label_smoothing=0.01, f_divergence_type=f_div)
    ours = trainer_loss(*_cols(df), **kw)
    terms = trainer_loss_terms(*_cols(df), **{k: v for k, v in kw.items() if k != "loss_weights"})
    assert list(terms) == loss_types
    w = weights or [1.0] * len(loss_types)
    np.testing.assert_allclose(ours, sum(wi * terms[lt] for wi, lt in zip(w, loss_types, strict=True)), rtol=1e-15)
    for i, r in enumerate(df.itertuples()):
        assert ours[i] == pytest.approx(_trl_dpo_loss(*r[1:], **kw), rel=1e-9, abs=1e-12), i


def _batch_pairs() -> pd.DataFrame:
    df = _trl_pairs(5, 41)
    # an empty rejected and an empty chosen completion (log-prob 0): TRL clamps their counts to 1
    df.loc[1, ["logp_rejected", "n_tokens_rejected"]] = [0.0, 0]
    df.loc[3, ["logp_chosen", "n_tokens_chosen"]] = [0.0, 0]
    return df


@pytest.mark.parametrize("loss_type, f_div", [(lt, f) for lt in TRL_LOSS_TYPES if lt != "sft"
                                               for f in ("reverse_kl", "js_divergence")
                                               if f == "reverse_kl" or lt in F_DIVERGENCE_LOSS_TYPES])
def test_trainer_loss_batch_mean_matches_trl(loss_type, f_div):
    """Five pairs through TRL at once: TRL's loss is the mean of our per-pair losses."""
    _require_trl()
    df = _batch_pairs()
    kw = dict(loss_types=[loss_type], beta=0.1, label_smoothing=_EPS.get(loss_type, 0.0), f_divergence_type=f_div)
    ours = trainer_loss(*_cols(df), **kw)
    assert ours.mean() == pytest.approx(_trl_dpo_loss(*_cols(df), **kw), rel=1e-9, abs=1e-12)


def test_trainer_loss_sft_batch_is_token_weighted():
    """TRL's sft is −Σ ℓ_π(y_w)/Σ n_w over the batch = Σ n_w·sft_i/Σ n_w, not the plain mean of sft_i."""
    _require_trl()
    df = _batch_pairs()
    ours = trainer_loss(*_cols(df), loss_types=["sft"])
    nw = df["n_tokens_chosen"].to_numpy()
    np.testing.assert_allclose(ours, -df["logp_chosen"] / np.maximum(nw, 1), rtol=1e-15)
    trl = _trl_dpo_loss(*_cols(df), loss_types=["sft"])
    assert (nw * ours).sum() / nw.sum() == pytest.approx(trl, rel=1e-9, abs=1e-12)
    assert ours.mean() != pytest.approx(trl, rel=1e-3)  # unequal lengths: the plain mean differs
    # and a combination: Σ_k w_k·TRL-batch-term_k
    comb = _trl_dpo_loss(*_cols(df), loss_types=["sigmoid", "sft"], loss_weights=[1.0, 0.3])
    sig = trainer_loss(*_cols(df), loss_types=["sigmoid"]).mean()
    assert comb == pytest.approx(sig + 0.3 * trl, rel=1e-9, abs=1e-12)


def test_trainer_loss_ld_alpha_one_is_plain_sum():
    """ld_alpha = 1.0 gives TRL's shared + 1.0·tail = the full sum; other values are refused."""
    _require_trl()
    df = _batch_pairs()
    for lt in ("sigmoid", "ipo", "bco_pair"):
        ours = trainer_loss(*_cols(df), loss_types=[lt], ld_alpha=1.0)
        np.testing.assert_array_equal(ours, trainer_loss(*_cols(df), loss_types=[lt]))
        assert ours.mean() == pytest.approx(_trl_dpo_loss(*_cols(df), loss_types=[lt], ld_alpha=1.0), rel=1e-9)


_EXTREME = pd.DataFrame({  # log-ratios ±800 (β = 1 → z up to ±1600): naive σ/exp would overflow
    "logp_chosen": [-1.0, -801.0, -1.0, -801.0, -1.0], "logp_rejected": [-801.0, -1.0, -1.0, -801.0, -1.0],
    "ref_logp_chosen": [-801.0, -1.0, -801.0, -1.0, -1.0], "ref_logp_rejected": [-1.0, -801.0, -801.0, -1.0, -1.0],
    "n_tokens_chosen": [1, 1, 1, 1, 1], "n_tokens_rejected": [1, 1, 1, 1, 1]})


@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
def test_trainer_loss_large_values_finite(loss_type):
    """Finite everywhere, and equal to TRL wherever TRL is finite.

    TRL's discopop is e^{1600}·σ(−32000) = inf·0 = nan at z = −1600; ours is the limit L(z) = 1600.
    """
    _require_trl()
    kw = dict(loss_types=[loss_type], beta=1.0, label_smoothing=_EPS.get(loss_type, 0.0), discopop_tau=0.05)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # (underflow to 0 is fine)
        ours = trainer_loss(*_cols(_EXTREME), **kw)
    assert np.isfinite(ours).all()
    for i, r in enumerate(_EXTREME.itertuples()):
        trl = _trl_dpo_loss(*r[1:], **kw)
        if math.isfinite(trl):
            assert ours[i] == pytest.approx(trl, rel=1e-9, abs=1e-12), i
        else:
            assert loss_type == "discopop"
            assert ours[i] == pytest.approx(1600.0, rel=1e-12)  # L(z) = −z once σ(z/τ) = 0


# HAND: d_w = −10 + 11 = 1, d_l = −12 + 11 = −1, δ = d_w − d_l = 2, n_w = 4, n_l = 2.
def _L(x):
    return math.log1p(math.exp(-x))  # −log σ(x)


def _s(x):
    return 1.0 / (1.0 + math.exp(-x))  # σ(x)


@pytest.mark.parametrize("loss_type, kwargs, expected", [
    # bco_pair: L(βd_w) + L(−βd_l) = 2·L(0.1) = 2·0.644397 = 1.288793
    ("bco_pair", dict(beta=0.1), 2 * _L(0.1)),
    # sppo_hard, β = 0.25 (1/(2β) = 2): (1 − 2)² + (−1 + 2)² = 2
    ("sppo_hard", dict(beta=0.25), 2.0),
    # apo_zero: 1 − σ(0.1) + σ(−0.1) = 2σ(−0.1) = 2/(1 + e^{0.1}) = 0.950042
    ("apo_zero", dict(beta=0.1), 2 / (1 + math.exp(0.1))),
    # apo_down: σ(βd_w) + 1 − σ(βδ) = σ(0.1) + 1 − σ(0.2) = 0.524979 + 1 − 0.549834 = 0.975145
    ("apo_down", dict(beta=0.1), _s(0.1) + 1 - _s(0.2)),
    # nca_pair, β = 1: L(1) + ½L(−1) + ½L(1) = 1.5·0.313262 + 0.5·1.313262 = 1.126523
    ("nca_pair", dict(beta=1.0), 1.5 * _L(1.0) + 0.5 * _L(-1.0)),
    # exo_pair, z = 0.2, ε = 0.1: σ(z)(log σ(z) − log 0.9) + σ(−z)(log σ(−z) − log 0.1) = 0.406304
    ("exo_pair", dict(beta=0.1, label_smoothing=0.1),
     _s(0.2) * (math.log(_s(0.2)) - math.log(0.9)) + _s(-0.2) * (math.log(_s(-0.2)) - math.log(0.1))),
    # discopop, z = 0.2, τ = 0.2 → σ(z/τ) = σ(1) = 0.731059: 0.268941·L(0.2) + e^{−0.2}·0.731059
    #   = 0.268941·0.598139 + 0.818731·0.731059 = 0.759404
    ("discopop", dict(beta=0.1, discopop_tau=0.2), _L(0.2) * (1 - _s(1.0)) + math.exp(-0.2) * _s(1.0)),
    # sft: −ℓ_π(y_w)/n_w = 10/4
    ("sft", dict(), 2.5),
    # sigmoid_norm: L(β(d_w/4 − d_l/2)) = L(0.1·0.75)
    ("sigmoid_norm", dict(beta=0.1), _L(0.075)),
    # forward KL: s = 1 − e^{−d}: s_w = 0.632121, s_l = 1 − e = −1.718282, Δ = 2.350402 → L(0.2350402)
    ("sigmoid", dict(beta=0.1, f_divergence_type="forward_kl"), _L(0.1 * (math.e - math.exp(-1)))),
    # JS: s = log 2 + log σ(d): Δ = log(1 + e) − log(1 + e^{−1}) = 1 exactly → L(0.1)
    ("sigmoid", dict(beta=0.1, f_divergence_type="js_divergence"), _L(0.1)),
    # α = ½: s = 2(1 − e^{−d/2}): Δ = 2(e^{½} − e^{−½}) = 4 sinh ½ = 2.084381 → hinge 1 − 0.208438
    ("hinge", dict(beta=0.1, f_divergence_type="alpha_divergence"), 1 - 0.4 * math.sinh(0.5)),
])
def test_trainer_loss_hand_worked(loss_type, kwargs, expected):
    got = trainer_loss(**HAND, loss_types=[loss_type], **kwargs)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_trainer_loss_agrees_with_preference_loss():
    df = _random_pairs(30, 5)
    args = _cols(df)
    for lt, agg in [("sigmoid", "sum"), ("hinge", "sum"), ("ipo", "mean"), ("robust", "sum"), ("sigmoid_norm", "mean")]:
        ours = trainer_loss(*args, loss_types=[lt], beta=0.07, label_smoothing=0.2)
        ref = preference_loss(*args, loss_type="sigmoid" if lt == "sigmoid_norm" else lt, beta=0.07,
                              aggregation=agg, label_smoothing=0.2)
        np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=1e-15)


def test_pair_losses_new_types():
    df = _random_pairs(12, 6)
    got = pair_losses(df, beta=0.1, loss_types=("sigmoid", "apo_zero", "exo_pair", "sft"), discopop_tau=0.1)
    for lt in ("apo_zero", "exo_pair", "sft"):
        np.testing.assert_array_equal(
            got[f"loss_{lt}"], trainer_loss(*_cols(df), loss_types=[lt], beta=0.1, label_smoothing=0.1))
    np.testing.assert_array_equal(got["loss_sigmoid"], trainer_loss(*_cols(df), loss_types=["sigmoid"], beta=0.1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss_types=["aot"]), "sorts"),
    (dict(loss_types=["aot_unpaired"]), "sorts"),
    (dict(loss_types=["kto"]), "unknown loss type 'kto'.*Supported per pair.*aot"),
    (dict(loss_types=[]), "at least one"),
    (dict(use_weighting=True), "log Σ_v p_v²"),
    (dict(ld_alpha=0.5), "shared length"),
    (dict(loss_types=["robust"], label_smoothing=0.5), "0 <= label_smoothing < 0.5"),
    (dict(loss_types=["robust"], label_smoothing=-0.1), "0 <= label_smoothing < 0.5"),
    (dict(loss_types=["exo_pair"], label_smoothing=0.0), "0 < label_smoothing < 1"),
    (dict(f_divergence_type="total_variation"), "f_divergence_type must be one of"),
    (dict(loss_types=["sigmoid", "nca_pair"], f_divergence_type="forward_kl"), "only supported for the loss types"),
    (dict(loss_types=["apo_zero"], f_divergence_type="alpha_divergence"), "only supported"),
    (dict(loss_types=["sigmoid", "sft"], loss_weights=[1.0]), "same length"),
    (dict(beta=0.0), "beta must be > 0"),
    (dict(loss_types=["discopop"], discopop_tau=0.0), "discopop_tau > 0"),
])
def test_trainer_loss_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        trainer_loss(**HAND, **kwargs)
    if "loss_weights" not in kwargs:
        with pytest.raises(ValueError, match=match):
            trainer_loss_terms(**HAND, **kwargs)


def test_trainer_loss_needs_token_counts_only_when_used():
    args = [HAND[c] for c in PAIR_COLUMNS[:4]]
    assert trainer_loss(*args, loss_types=["bco_pair"]).shape == (1,)
    with pytest.raises(ValueError, match="n_tokens"):
        trainer_loss(*args, loss_types=["ipo"])
