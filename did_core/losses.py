"""Per-pair DPO quantities and the preference losses a DPO practitioner meets (pure numpy, no I/O).

Everything here works on 1-D float arrays of length N (one entry per preference pair) or on the
`ws.pairs` DataFrame (one row per (pair, checkpoint); ARCHITECTURE.md). Natural logs throughout.

Notation (DESIGN.md §2): `logp_*` are sequence log-probs ℓ_π(y|x) summed over response tokens,
`ref_logp_*` the reference's, `n_tokens_*` the number of scored response tokens.
`aggregation="mean"` divides each sequence log-prob by its token count (clamped to ≥ 1, as TRL
does) before anything else, so every quantity below exists in a per-token flavour.

Formulas and papers: docs/ANALYTICS.md. Each loss matches TRL 1.16 (`trl/trainer/dpo_trainer.py`
`_compute_loss`, and `trl/experimental/cpo/cpo_trainer.py` `cpo_loss` for SimPO) — see
tests/test_losses.py, which runs TRL's own code on the same numbers.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

Aggregation = Literal["sum", "mean"]
LossType = Literal["sigmoid", "ipo", "hinge", "robust", "simpo"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "robust", "simpo")
# TRL's choices: IPO and SimPO normalise by length, the others use summed log-probs.
DEFAULT_AGGREGATION: dict[str, Aggregation] = {
    "sigmoid": "sum", "hinge": "sum", "robust": "sum", "ipo": "mean", "simpo": "mean",
}


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def neg_log_sigmoid(z) -> np.ndarray:
    """−log σ(z) = softplus(−z), stable for large |z|. Shape preserved."""
    return np.logaddexp(0.0, -_f64(z))


def aggregate_logp(logp, n_tokens, aggregation: Aggregation = "sum") -> np.ndarray:
    """Sequence score from a summed log-prob: the sum itself, or the per-token mean.

    logp: (N,) summed log-probs; n_tokens: (N,) token counts (0 is clamped to 1, like TRL).
    Returns (N,) float64. Naive: `[lp / max(n, 1) for lp, n in zip(logp, n_tokens)]` for "mean".
    """
    logp = _f64(logp)
    if aggregation == "sum":
        return logp
    if aggregation == "mean":
        return logp / np.maximum(_f64(n_tokens), 1.0)
    raise ValueError(f"aggregation must be 'sum' or 'mean', got {aggregation!r}")


def log_ratio(logp, ref_logp) -> np.ndarray:
    """d(y) = ℓ_π(y) − ℓ_ref(y): the DID log-weight, DPO's implicit reward before β. (N,)."""
    return _f64(logp) - _f64(ref_logp)


def implicit_reward(logp, ref_logp, beta: float) -> np.ndarray:
    """r(y) = β·d(y). (N,)."""
    return beta * log_ratio(logp, ref_logp)


def log_margin(logp_chosen, logp_rejected) -> np.ndarray:
    """M = ℓ(y_w) − ℓ(y_l) for one model. (N,)."""
    return _f64(logp_chosen) - _f64(logp_rejected)


def preference_loss(
    logp_chosen, logp_rejected, ref_logp_chosen=None, ref_logp_rejected=None,
    n_tokens_chosen=None, n_tokens_rejected=None, *, loss_type: LossType = "sigmoid", beta: float = 0.1,
    aggregation: Aggregation | None = None, label_smoothing: float = 0.0, simpo_gamma: float = 0.5,
) -> np.ndarray:
    """Per-pair loss (N,) for one of LOSS_TYPES.

    With s = aggregated sequence scores (sum or per-token mean) and
    δ = (s_π(y_w) − s_ref(y_w)) − (s_π(y_l) − s_ref(y_l)):
      sigmoid  −log σ(βδ)                                            (DPO)
      ipo      (δ − 1/(2β))²                                         (IPO; TRL uses per-token means)
      hinge    max(0, 1 − βδ)                                        (SLiC)
      robust   [(1−ε)(−log σ(βδ)) − ε(−log σ(−βδ))] / (1 − 2ε)       (rDPO, ε = label_smoothing)
      simpo    −log σ(β(s̄_π(y_w) − s̄_π(y_l)) − γ)                   (SimPO; reference-free, means)
    `aggregation=None` picks TRL's choice per loss (DEFAULT_AGGREGATION). The reference arrays may
    be None only for SimPO; token counts are needed only for "mean".
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    agg = aggregation or DEFAULT_AGGREGATION[loss_type]
    if agg == "mean" and (n_tokens_chosen is None or n_tokens_rejected is None):
        raise ValueError("per-token-mean aggregation needs n_tokens_chosen and n_tokens_rejected")
    s_w = aggregate_logp(logp_chosen, n_tokens_chosen, agg)
    s_l = aggregate_logp(logp_rejected, n_tokens_rejected, agg)
    if loss_type == "simpo":
        return neg_log_sigmoid(beta * (s_w - s_l) - simpo_gamma)
    if ref_logp_chosen is None or ref_logp_rejected is None:
        raise ValueError(f"loss {loss_type!r} needs the reference log-probs")
    delta = (s_w - aggregate_logp(ref_logp_chosen, n_tokens_chosen, agg)) - (
        s_l - aggregate_logp(ref_logp_rejected, n_tokens_rejected, agg))
    z = beta * delta
    if loss_type == "sigmoid":
        return neg_log_sigmoid(z)
    if loss_type == "ipo":
        return (delta - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return np.maximum(0.0, 1.0 - z)
    eps = label_smoothing
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"robust loss needs 0 <= label_smoothing < 0.5, got {eps}")
    return ((1.0 - eps) * neg_log_sigmoid(z) - eps * neg_log_sigmoid(-z)) / (1.0 - 2.0 * eps)


PAIR_COLUMNS = ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected",
                "n_tokens_chosen", "n_tokens_rejected")


def pair_quantities(pairs: pd.DataFrame, beta: float, aggregation: Aggregation = "sum") -> pd.DataFrame:
    """DPO quantities per row of a `ws.pairs`-like table (one row per (pair, model)).

    Needs PAIR_COLUMNS; keeps `pair_id`, `model`, `step` when present. Returns one row per input row
    (same index) with float64 columns `log_ratio_chosen`, `log_ratio_rejected` (d(y_w), d(y_l)),
    `reward_chosen`, `reward_rejected` (β·d), `reward_margin`, `log_margin` (M_π), `ref_log_margin`
    (M_ref), `dpo_loss` (−log σ(reward_margin)), and bool columns `accuracy` (M_π > M_ref, strict as
    TRL), `chosen_down`, `rejected_down` (d < 0) and `displaced` (both < 0).
    With aggregation "mean" every log-prob is first divided by its token count.
    """
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    nw, nl = pairs["n_tokens_chosen"].to_numpy(), pairs["n_tokens_rejected"].to_numpy()
    lw = aggregate_logp(pairs["logp_chosen"].to_numpy(), nw, aggregation)
    ll = aggregate_logp(pairs["logp_rejected"].to_numpy(), nl, aggregation)
    rw = aggregate_logp(pairs["ref_logp_chosen"].to_numpy(), nw, aggregation)
    rl = aggregate_logp(pairs["ref_logp_rejected"].to_numpy(), nl, aggregation)
    d_w, d_l = log_ratio(lw, rw), log_ratio(ll, rl)
    reward_margin = beta * (d_w - d_l)
    out = pairs[[c for c in ("pair_id", "model", "step") if c in pairs.columns]].copy()
    out["log_ratio_chosen"] = d_w
    out["log_ratio_rejected"] = d_l
    out["reward_chosen"] = beta * d_w
    out["reward_rejected"] = beta * d_l
    out["reward_margin"] = reward_margin
    out["log_margin"] = log_margin(lw, ll)
    out["ref_log_margin"] = log_margin(rw, rl)
    out["dpo_loss"] = neg_log_sigmoid(reward_margin)
    out["accuracy"] = reward_margin > 0
    out["chosen_down"] = d_w < 0
    out["rejected_down"] = d_l < 0
    out["displaced"] = (d_w < 0) & (d_l < 0)
    return out


def pair_losses(pairs: pd.DataFrame, beta: float, loss_types: tuple[str, ...] = LOSS_TYPES, *,
                aggregation: Aggregation | None = None, label_smoothing: float = 0.1,
                simpo_gamma: float = 0.5) -> pd.DataFrame:
    """Every requested loss per row of a `ws.pairs`-like table: columns `loss_<type>` (float64).

    `aggregation=None` uses TRL's choice per loss; `label_smoothing` is ε for "robust".
    """
    cols = {c: pairs[c].to_numpy() for c in PAIR_COLUMNS}
    out = pairs[[c for c in ("pair_id", "model", "step") if c in pairs.columns]].copy()
    for lt in loss_types:
        out[f"loss_{lt}"] = preference_loss(
            cols["logp_chosen"], cols["logp_rejected"], cols["ref_logp_chosen"], cols["ref_logp_rejected"],
            cols["n_tokens_chosen"], cols["n_tokens_rejected"], loss_type=lt, beta=beta,  # type: ignore[arg-type]
            aggregation=aggregation, label_smoothing=label_smoothing, simpo_gamma=simpo_gamma)
    return out
