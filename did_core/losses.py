"""Per-pair DPO quantities and the preference losses a DPO practitioner meets (pure numpy, no I/O).

Everything here works on 1-D float arrays of length N (one entry per preference pair) or on the
`Workspace.pairs` DataFrame (stored numbers joined to the reference, one row per (pair, checkpoint);
docs/ARCHITECTURE.md). `pair_table` adds every derived per-pair column to that table (log-ratios,
rewards, margins, the DPO loss, accuracy, displacement flags and the trainer's own loss): the export,
compare, curves, the audit and the pages all take them from there. Natural logs throughout.

Notation (docs/REFERENCE.md §1): `logp_*` are sequence log-probs ℓ_π(y|x) summed over response tokens,
`ref_logp_*` the reference's, `n_tokens_*` the number of scored response tokens.
`aggregation="mean"` divides each sequence log-prob by its token count (clamped to ≥ 1, as TRL
does) before anything else, so every quantity below exists in a per-token flavour.

Formulas and papers: docs/ANALYTICS.md. Each loss matches TRL 1.16 (`trl/trainer/dpo_trainer.py`
`_compute_loss`, and `trl/experimental/cpo/cpo_trainer.py` `cpo_loss` for SimPO) — see
tests/test_losses.py, which runs TRL's own code on the same numbers.

Two layers: `preference_loss` / `pair_losses` (a handful of losses, each with a free choice of
aggregation) and `trainer_loss` / `trainer_loss_terms` (every `DPOTrainer` loss type that is a
function of the stored per-pair quantities, with TRL's f-divergence transform, loss weights and
parameter checks, so that the batch mean of `trainer_loss` is TRL's batch loss).

Why one module of ~450 lines: it is the one place each per-pair formula is written (the table
columns and every loss type alike), and every loss is checked against TRL's own code by
tests/test_losses.py through the same helpers (the f-divergence scores, the stable log-sigmoid);
they stay side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from did_core.run_settings import DEFAULT_BETA, F_DIVERGENCES

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
    n_tokens_chosen=None, n_tokens_rejected=None, *, loss_type: LossType = "sigmoid", beta: float = DEFAULT_BETA,
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
    # TRL's terms (one definition each) on the aggregated scores; counts 1: the scores are aggregated already
    ones = np.ones_like(s_w)
    return trainer_loss_terms(s_w, s_l, aggregate_logp(ref_logp_chosen, n_tokens_chosen, agg),
                              aggregate_logp(ref_logp_rejected, n_tokens_rejected, agg), ones, ones,
                              loss_types=(loss_type,), beta=beta, label_smoothing=label_smoothing)[loss_type]


PAIR_COLUMNS = ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected",
                "n_tokens_chosen", "n_tokens_rejected")
"""The stored numbers every formula here reads (columns of `Workspace.pairs`)."""
PAIRS_COLUMNS = ["pair_id", "model", "step", "logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected",
                 "n_tokens_chosen", "n_tokens_rejected", "reward_chosen", "reward_rejected", "reward_margin",
                 "log_margin", "ref_log_margin", "dpo_loss", "did_entropy_chosen", "did_entropy_rejected",
                 "ches", "ches_norm", "top1_prob_chosen", "top1_prob_rejected", "token_entropy_chosen",
                 "token_entropy_rejected"]
"""docs/REFERENCE.md §7's export columns, in order: the first columns of a `pair_table`."""
VIEW_COLUMNS = ("log_ratio_chosen", "log_ratio_rejected", "chosen_down", "rejected_down", "displaced")
"""The derived columns a `pair_table` ends with that the export leaves out (the pages use them)."""
DERIVED_COLUMNS = ("reward_chosen", "reward_rejected", "reward_margin", "log_margin", "ref_log_margin", "dpo_loss",
                   "accuracy", "loss", *VIEW_COLUMNS)
"""Every column `pair_table` adds to the stored numbers."""
_LAST = ("numerics", "run")


def pair_table(pairs: pd.DataFrame, rs, aggregation: Aggregation = "sum") -> pd.DataFrame:
    """A `Workspace.pairs` table (stored numbers joined to the reference; one row per (pair, model))
    with every derived per-pair column, under the run's settings `rs` (`run_settings.RunSettings`).

    Needs PAIR_COLUMNS; every other column is kept (derived ones already there are computed anew).
    Adds float64 `log_ratio_chosen`, `log_ratio_rejected` (d(y_w), d(y_l)), `reward_chosen`,
    `reward_rejected` (β·d), `reward_margin`, `log_margin` (M_π), `ref_log_margin` (M_ref), `dpo_loss`
    (−log σ(reward_margin), whatever the run's loss type), bool `accuracy` (reward_margin > 0, i.e.
    M_π > M_ref, strict as TRL), `chosen_down`, `rejected_down` (d < 0), `displaced` (both < 0), and `loss`, the trainer's own
    loss (`run_loss`, from the summed log-probs whatever `aggregation`). With aggregation "mean" the
    log-prob columns are replaced by per-token means first and everything but `loss` follows them.
    Columns: PAIRS_COLUMNS, the other stored ones, `accuracy`, `loss`, `numerics`/`run` if given, VIEW_COLUMNS.
    """
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    out = pairs.drop(columns=[c for c in DERIVED_COLUMNS if c in pairs.columns])
    loss = run_loss(out, rs)
    nw, nl = out["n_tokens_chosen"].to_numpy(), out["n_tokens_rejected"].to_numpy()
    for col, n in (("logp_chosen", nw), ("logp_rejected", nl), ("ref_logp_chosen", nw), ("ref_logp_rejected", nl)):
        out[col] = aggregate_logp(out[col].to_numpy(), n, aggregation)
    lw, ll, rw, rl = (out[c].to_numpy() for c in PAIR_COLUMNS[:4])
    d_w, d_l = log_ratio(lw, rw), log_ratio(ll, rl)
    margin = rs.beta * (d_w - d_l)
    derived = {"reward_chosen": implicit_reward(lw, rw, rs.beta), "reward_rejected": implicit_reward(ll, rl, rs.beta),
               "reward_margin": margin, "log_margin": log_margin(lw, ll), "ref_log_margin": log_margin(rw, rl),
               "dpo_loss": neg_log_sigmoid(margin), "accuracy": margin > 0,
               "loss": loss, "log_ratio_chosen": d_w, "log_ratio_rejected": d_l, "chosen_down": d_w < 0,
               "rejected_down": d_l < 0, "displaced": (d_w < 0) & (d_l < 0)}
    cols = {c: out[c] for c in out.columns} | {c: pd.Series(v, index=out.index, copy=False) for c, v in derived.items()}
    head = [c for c in PAIRS_COLUMNS if c in cols]
    stored = [c for c in cols if c not in head and c not in DERIVED_COLUMNS and c not in _LAST]
    order = [*head, *stored, "accuracy", "loss", *(c for c in _LAST if c in cols), *VIEW_COLUMNS]
    # assembled from the columns themselves: a reordering `out[[...]]` would copy every one of them
    return pd.DataFrame({c: cols[c] for c in order}, copy=False)


def pair_losses(pairs: pd.DataFrame, beta: float, loss_types: tuple[str, ...] = LOSS_TYPES, *,
                aggregation: Aggregation | None = None, label_smoothing: float = 0.1,
                simpo_gamma: float = 0.5, discopop_tau: float = 0.05) -> pd.DataFrame:
    """Every requested loss per row of a `ws.pairs`-like table: columns `loss_<type>` (float64).

    Types in LOSS_TYPES go through `preference_loss`: `aggregation=None` uses TRL's choice per loss,
    `label_smoothing` is ε for "robust". Any other type of TRL_LOSS_TYPES ("exo_pair", "nca_pair",
    "bco_pair", "sppo_hard", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm") is TRL's own
    definition via `trainer_loss_terms` (reverse KL; `aggregation` does not apply to them;
    `label_smoothing` is ε for "exo_pair", `discopop_tau` is τ for "discopop").
    """
    cols = {c: pairs[c].to_numpy() for c in PAIR_COLUMNS}
    args = [cols[c] for c in PAIR_COLUMNS]
    out = pairs[[c for c in ("pair_id", "model", "step") if c in pairs.columns]].copy()
    for lt in loss_types:
        if lt in LOSS_TYPES:
            out[f"loss_{lt}"] = preference_loss(
                *args, loss_type=lt, beta=beta,  # type: ignore[arg-type]
                aggregation=aggregation, label_smoothing=label_smoothing, simpo_gamma=simpo_gamma)
        else:
            out[f"loss_{lt}"] = trainer_loss_terms(
                *args, loss_types=(lt,), beta=beta, label_smoothing=label_smoothing,
                discopop_tau=discopop_tau)[lt]
    return out


# --- TRL 1.16 DPOTrainer loss types, per pair ----------------------------------------------------

TRL_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
UNSUPPORTED_LOSS_TYPES: dict[str, str] = {
    "aot": "AOT sorts the policy and reference log-margins within the batch and pairs them by rank, "
           "so a pair's loss depends on the rest of the batch, not on the pair alone.",
    "aot_unpaired": "unpaired AOT sorts the chosen and the rejected log-ratios within the batch and pairs "
                    "them by rank, so a pair's loss depends on the rest of the batch, not on the pair alone.",
    "use_weighting": "WPO weighting (use_weighting=True) multiplies each pair's loss by exp of the mean over "
                     "tokens of log p − log Σ_v p_v², and the per-token log Σ p² is not stored.",
    "ld_alpha": "LD-DPO (ld_alpha other than None or 1.0) reweights the tokens past the shorter completion's "
                "length, which needs each sequence's per-token log-probs split at the pair's shared length; "
                "only the per-pair sums are stored.",
}
F_DIVERGENCE_TYPES: tuple[str, ...] = F_DIVERGENCES  # one definition: run_settings (the CLI's choices)
# TRL: only losses built on the chosen − rejected score difference accept a non-default f-divergence.
F_DIVERGENCE_LOSS_TYPES: frozenset[str] = frozenset(
    {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"})
# TRL clamps (α−1)·d at 80 before exp for float32/bfloat16 training (11 for float16).
ALPHA_DIVERGENCE_CLAMP = 80.0


def _sigmoid(z) -> np.ndarray:
    """σ(z) = exp(−softplus(−z)), no overflow for any z."""
    return np.exp(-np.logaddexp(0.0, -_f64(z)))


def f_divergence_scores(log_ratios, f_divergence_type: str = "reverse_kl",
                        f_alpha_divergence_coef: float = 0.5) -> np.ndarray:
    """TRL's f-DPO score f'(π/π_ref) of a log-ratio d = log π(y) − log π_ref(y) (`chosen_scores`). (N,).

      reverse_kl        d                                   (standard DPO)
      forward_kl        1 − e^{−d}                          (−expm1(−d); −inf once e^{−d} overflows, as TRL)
      js_divergence     log 2 + log σ(d)
      alpha_divergence  (e^{min((α−1)d, 80)} − 1)/(α−1)     (α = f_alpha_divergence_coef)
                        d itself when |α−1| < 1e-6 (TRL's fallback)
    The clamp at 80 is TRL's for float32/bfloat16 (TRL does this exp in float32 whatever the input dtype).
    """
    d = _f64(log_ratios)
    if f_divergence_type == "reverse_kl":
        return d
    if f_divergence_type == "forward_kl":
        with np.errstate(over="ignore"):
            return -np.expm1(-d)
    if f_divergence_type == "js_divergence":
        return np.log(2.0) - np.logaddexp(0.0, -d)
    if f_divergence_type == "alpha_divergence":
        a = float(f_alpha_divergence_coef)
        if abs(a - 1.0) < 1e-6:  # limit α → 1 is log t: TRL falls back to reverse KL
            return d
        return np.expm1(np.minimum((a - 1.0) * d, ALPHA_DIVERGENCE_CLAMP)) * (1.0 / (a - 1.0))
    raise ValueError(f"f_divergence_type must be one of {F_DIVERGENCE_TYPES}, got {f_divergence_type!r}")


def _check_trainer_args(loss_types: Sequence[str], loss_weights: Sequence[float] | None, beta: float,
                        label_smoothing: float, f_divergence_type: str, discopop_tau: float,
                        use_weighting: bool, ld_alpha: float | None) -> tuple[list[str], list[float]]:
    if isinstance(loss_types, str):  # TRL's config turns a single string into a list
        loss_types = [loss_types]
    types = list(loss_types)
    if not types:
        raise ValueError("loss_types must name at least one loss type")
    for lt in types:
        if lt in UNSUPPORTED_LOSS_TYPES:
            raise ValueError(f"loss type {lt!r} cannot be computed per pair: {UNSUPPORTED_LOSS_TYPES[lt]}")
        if lt not in TRL_LOSS_TYPES:
            unsupported = "; ".join(f"{k}: {v}" for k, v in UNSUPPORTED_LOSS_TYPES.items())
            raise ValueError(f"unknown loss type {lt!r}. Supported per pair: {list(TRL_LOSS_TYPES)}. "
                             f"Not supported per pair — {unsupported}")
    if loss_weights is None:
        weights = [1.0] * len(types)
    else:
        weights = [float(w) for w in loss_weights]
        if len(weights) != len(types):
            raise ValueError(f"loss_weights must have the same length as loss_types: got {len(weights)} weights "
                             f"for {len(types)} loss types")
    if use_weighting:
        raise ValueError(f"use_weighting=True cannot be reproduced per pair: {UNSUPPORTED_LOSS_TYPES['use_weighting']}")
    if ld_alpha is not None and ld_alpha != 1.0:
        raise ValueError(f"ld_alpha={ld_alpha} cannot be reproduced per pair: {UNSUPPORTED_LOSS_TYPES['ld_alpha']}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if f_divergence_type not in F_DIVERGENCE_TYPES:
        raise ValueError(f"f_divergence_type must be one of {F_DIVERGENCE_TYPES}, got {f_divergence_type!r}")
    if f_divergence_type != "reverse_kl" and not set(types) <= F_DIVERGENCE_LOSS_TYPES:
        raise ValueError(
            f"f_divergence_type={f_divergence_type!r} is only supported for the loss types "
            f"{sorted(F_DIVERGENCE_LOSS_TYPES)} (the f-DPO reparameterisation leaves a β·log Z(x) term that cancels "
            f"only in the chosen − rejected score difference); got {types}. Use 'reverse_kl' with these losses.")
    if "robust" in types and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust loss needs 0 <= label_smoothing < 0.5 (ε is a label-flip rate), "
                         f"got {label_smoothing}")
    if "exo_pair" in types and not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"exo_pair loss needs 0 < label_smoothing < 1 (it takes log ε and log(1 − ε); "
                         f"the EXO paper recommends 1e-3), got {label_smoothing}")
    if "discopop" in types and not discopop_tau > 0:
        raise ValueError(f"discopop loss needs discopop_tau > 0, got {discopop_tau}")
    return types, weights


def trainer_loss_terms(
    logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, n_tokens_chosen=None, n_tokens_rejected=None,
    *, loss_types: Sequence[str] = ("sigmoid",), beta: float = DEFAULT_BETA, label_smoothing: float = 0.0,
    f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5, discopop_tau: float = 0.05,
    use_weighting: bool = False, ld_alpha: float | None = None,
) -> dict[str, np.ndarray]:
    """Each requested TRL 1.16 `DPOTrainer` loss term per pair, unweighted: {type: (N,) float64}.

    Inputs are (N,) summed sequence log-probs and token counts (counts are needed only for "ipo",
    "sigmoid_norm" and "sft"; 0 is clamped to 1 as TRL does). With d_w, d_l the log-ratios
    ℓ_π − ℓ_ref, s_w = f(d_w), s_l = f(d_l) their f-divergence scores (`f_divergence_scores`),
    Δ = s_w − s_l, z = βΔ, n̄ = max(n, 1), L(x) = −log σ(x) = softplus(−x):
      sigmoid       L(z)
      hinge         max(0, 1 − z)
      ipo           (s_w/n̄_w − s_l/n̄_l − 1/(2β))²
      exo_pair      σ(z)(log σ(z) − log(1−ε)) + σ(−z)(log σ(−z) − log ε)          (ε = label_smoothing)
      nca_pair      L(βd_w) + ½L(−βd_w) + ½L(−βd_l)
      robust        [(1−ε)L(z) − εL(−z)]/(1 − 2ε)
      bco_pair      L(βd_w) + L(−βd_l)
      sppo_hard     (d_w − 1/(2β))² + (d_l + 1/(2β))²
      apo_zero      σ(−βd_w) + σ(βd_l)                                             (= 1 − σ(βd_w) + σ(βd_l))
      apo_down      σ(βd_w) + σ(−β(d_w − d_l))
      discopop      L(z)·(1 − σ(z/τ)) + e^{−z}·σ(z/τ)                              (τ = discopop_tau)
      sft           −ℓ_π(y_w)/n̄_w
      sigmoid_norm  L(β(s_w/n̄_w − s_l/n̄_l))
    nca_pair, bco_pair, sppo_hard and the apo losses use d itself (TRL allows them only with reverse KL).
    "sft" here is each pair's per-token NLL of the chosen response; TRL's batch value is the
    token-weighted mean over the batch's chosen tokens, −Σ_i ℓ_π(y_w,i)/Σ_i n_w,i = Σ_i n_w,i·sft_i/Σ_i n_w,i,
    which equals sft_i for a batch of one pair (and the plain mean of sft_i only for equal lengths).
    Everything is computed with logaddexp/expm1 forms, so large |z| give finite values wherever
    TRL's do (and also where TRL's discopop gives inf·0 = nan). Parameter errors raise ValueError
    (TRL itself only warns for robust's ε outside [0, 0.5)). `use_weighting=True` and `ld_alpha`
    other than None raise (UNSUPPORTED_LOSS_TYPES), except ld_alpha = 1.0, which TRL computes as the
    plain sum (shared + 1.0·tail).
    """
    types, _ = _check_trainer_args(loss_types, None, beta, label_smoothing, f_divergence_type, discopop_tau,
                                   use_weighting, ld_alpha)
    lw, ll, rw, rl = np.broadcast_arrays(*(np.atleast_1d(_f64(x)) for x in (
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)))
    nw = nl = None
    if {"ipo", "sigmoid_norm", "sft"} & set(types):
        if n_tokens_chosen is None or n_tokens_rejected is None:
            raise ValueError("loss types 'ipo', 'sigmoid_norm' and 'sft' need n_tokens_chosen and n_tokens_rejected")
        nw = np.broadcast_to(np.maximum(_f64(n_tokens_chosen), 1.0), lw.shape)
        nl = np.broadcast_to(np.maximum(_f64(n_tokens_rejected), 1.0), lw.shape)
    d_w, d_l = lw - rw, ll - rl
    s_w = f_divergence_scores(d_w, f_divergence_type, f_alpha_divergence_coef)
    s_l = f_divergence_scores(d_l, f_divergence_type, f_alpha_divergence_coef)
    with np.errstate(invalid="ignore"):  # −inf − (−inf) under forward KL is nan, as in TRL
        z = beta * (s_w - s_l)
    q = _Terms(lw=lw, d_w=d_w, d_l=d_l, s_w=s_w, s_l=s_l, z=z, beta=beta, eps=float(label_smoothing),
               tau=discopop_tau, nw=nw, nl=nl)
    return {lt: np.asarray(_TERM[lt](q), dtype=np.float64) for lt in dict.fromkeys(types)}


@dataclass(frozen=True)
class _Terms:
    """What the loss terms are written in (trainer_loss_terms' notation); nw, nl only when needed."""

    lw: np.ndarray
    d_w: np.ndarray
    d_l: np.ndarray
    s_w: np.ndarray
    s_l: np.ndarray
    z: np.ndarray
    beta: float
    eps: float
    tau: float
    nw: np.ndarray | None
    nl: np.ndarray | None


_TERM: dict[str, Callable[[_Terms], np.ndarray]] = {
    "sigmoid": lambda q: neg_log_sigmoid(q.z),
    "hinge": lambda q: np.maximum(0.0, 1.0 - q.z),
    "ipo": lambda q: (q.s_w / q.nw - q.s_l / q.nl - 1.0 / (2.0 * q.beta)) ** 2,
    "exo_pair": lambda q: (_sigmoid(q.z) * (-neg_log_sigmoid(q.z) - np.log1p(-q.eps))
                           + _sigmoid(-q.z) * (-neg_log_sigmoid(-q.z) - np.log(q.eps))),
    "nca_pair": lambda q: (neg_log_sigmoid(q.beta * q.d_w) + 0.5 * neg_log_sigmoid(-q.beta * q.d_w)
                           + 0.5 * neg_log_sigmoid(-q.beta * q.d_l)),
    "robust": lambda q: ((1.0 - q.eps) * neg_log_sigmoid(q.z) - q.eps * neg_log_sigmoid(-q.z)) / (1.0 - 2.0 * q.eps),
    "bco_pair": lambda q: neg_log_sigmoid(q.beta * q.d_w) + neg_log_sigmoid(-q.beta * q.d_l),
    "sppo_hard": lambda q: (q.d_w - 0.5 / q.beta) ** 2 + (q.d_l + 0.5 / q.beta) ** 2,
    "apo_zero": lambda q: _sigmoid(-q.beta * q.d_w) + _sigmoid(q.beta * q.d_l),
    "apo_down": lambda q: _sigmoid(q.beta * q.d_w) + _sigmoid(-q.beta * (q.d_w - q.d_l)),
    # e^{−z}·σ(z/τ) = exp(−z − softplus(−z/τ)): no inf·0 for very negative z
    "discopop": lambda q: (neg_log_sigmoid(q.z) * _sigmoid(-q.z / q.tau)
                           + np.exp(-q.z - np.logaddexp(0.0, -q.z / q.tau))),
    "sft": lambda q: -q.lw / q.nw,
    "sigmoid_norm": lambda q: neg_log_sigmoid(q.beta * (q.s_w / q.nw - q.s_l / q.nl)),
}
"""Each TRL 1.16 per-pair loss term, as trainer_loss_terms' docstring writes it."""


def trainer_loss(
    logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, n_tokens_chosen=None, n_tokens_rejected=None,
    *, loss_types: Sequence[str] = ("sigmoid",), loss_weights: Sequence[float] | None = None, beta: float = DEFAULT_BETA,
    label_smoothing: float = 0.0, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5,
    discopop_tau: float = 0.05, use_weighting: bool = False, ld_alpha: float | None = None,
) -> np.ndarray:
    """TRL 1.16 `DPOTrainer`'s combined loss per pair: Σ_k w_k · term_k, (N,) float64.

    Arguments as `DPOConfig` (`loss_type` → `loss_types`; `loss_weights=None` means all 1.0); terms
    and formulas as `trainer_loss_terms`. TRL's batch loss is Σ_k w_k · mean_batch(term_k), so the
    mean of this array over a batch is TRL's loss on that batch — except for a "sft" term, whose
    TRL batch value is the token-weighted mean (see `trainer_loss_terms`).
    """
    types, weights = _check_trainer_args(loss_types, loss_weights, beta, label_smoothing, f_divergence_type,
                                         discopop_tau, use_weighting, ld_alpha)
    terms = trainer_loss_terms(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, n_tokens_chosen, n_tokens_rejected,
        loss_types=types, beta=beta, label_smoothing=label_smoothing, f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef, discopop_tau=discopop_tau)
    total = np.zeros_like(next(iter(terms.values())))
    for lt, w in zip(types, weights, strict=True):
        total = total + w * terms[lt]
    return total


def check_run_loss(rs) -> str | None:
    """None when the run's loss (`run_settings.RunSettings`) is computable per pair, else the reason
    (`UNSUPPORTED_LOSS_TYPES`). Raises ValueError for a loss TRL 1.16 does not know or parameters it refuses."""
    keys = [*rs.loss_type, *(["use_weighting"] if rs.use_weighting else []),
            *(["ld_alpha"] if rs.ld_alpha not in (None, 1.0) else [])]
    for key in keys:
        if key in UNSUPPORTED_LOSS_TYPES:
            return UNSUPPORTED_LOSS_TYPES[key]
    _check_trainer_args(rs.loss_type, rs.loss_weights, rs.beta, rs.label_smoothing, rs.f_divergence_type,
                        rs.discopop_tau, False, None)
    return None


def run_loss(pairs: pd.DataFrame, rs) -> np.ndarray:
    """The trainer's own per-pair loss for a `ws.pairs`-like table (PAIR_COLUMNS) under the run's
    settings `rs` (`run_settings.RunSettings`): loss_type(s), weights, β and loss parameters.
    (N,) float64; all NaN when the loss is not a per-pair function (`check_run_loss` says why)."""
    n = len(pairs)
    try:
        if check_run_loss(rs) is not None:
            return np.full(n, np.nan)
    except ValueError:
        return np.full(n, np.nan)
    cols = [pairs[c].to_numpy() for c in PAIR_COLUMNS]
    return trainer_loss(*cols, **rs.loss_kwargs())
