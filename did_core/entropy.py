r"""Sequence-level DID entropy: over a candidate set, by importance sampling, and exactly (pure numpy).

Notation (docs/REFERENCE.md §1, §3): d(y) = ℓ_π(y) − ℓ_ref(y), w(y) = e^{d(y)} = π(y)/π_ref(y), and the
Differential Information Distribution q(y) = w(y)/Z with Z = Σ_y w(y), the sum running over every
response of the world (every finite token sequence the models can emit).

Three quantities, never to be confused (docs/ANALYTICS.md has the long version):

* **Restricted entropy** H_S (the paper's K = 32 diagnostic): q_S = softmax(d) over the K sampled
  responses taken as drawn (a duplicate counts twice), H_S = −Σ q_S log q_S ∈ [0, log K].
  It is a property of the sample set, not an estimate of H(q): with y_i ~ π it weighs each sample
  by w but ignores that π already chose it, so as K grows H_S ≈ log K + const and does not converge.
* **SNIS estimate of H(q)** from samples of a proposal p whose normalized log-probs log p(y_i) are
  known (the policy by default, p = π). Derivation:
      H(q) = −E_q[log q(Y)] = −E_q[d(Y)] + log Z                       (log q = d − log Z)
  Neither term is an expectation under π_ref that we could sample: note E_{π_ref}[π/π_ref] = 1 for
  every π, so Z is not that; Z = Σ_y w(y) = E_p[w(Y)/p(Y)]. With importance weights
      ω_i = w(y_i)/p(y_i) = exp(d_i − log p(y_i))        (p = π:  ω_i = 1/π_ref(y_i) = e^{−ℓ_ref(y_i)})
  both terms are estimable from the proposal's samples:
      Ẑ = (1/K) Σ_i ω_i                  unbiased for Z (needs log p normalized: temperature, top-k,
                                          top-p must be the sampler's actual distribution);
      Ê_q[d] = Σ_i ω̃_i d_i,  ω̃ = ω/Σω   self-normalized, consistent, O(1/K) bias;
      Ĥ = log Ẑ − Σ_i ω̃_i d_i  = −Σ_i ω̃_i log(w(y_i)/Ẑ).
  Ĥ is consistent; log Ẑ is biased low by Jensen (≈ Var(ω)/(2K Z²)). Its effective sample size is
  1/Σ ω̃². The weights are *not* softmax(d): that is H_S's. For language models Z sums over all
  sequences and ω has an enormous variance, so ESS ≈ 1 is the norm there; Ĥ is meaningful in small
  worlds and as a within-run comparison, and the ESS says how far to trust it.
* **Exact entropy** on an enumerable world: H(q) with q = softmax(d) over every response.

Arrays: the last axis holds the K samples; leading axes broadcast (e.g. (P, K) for P prompts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

Estimator = Literal["restricted", "snis"]


def _logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.sum(np.exp(a - m), axis=axis)) + np.squeeze(m, axis=axis)


def did_distribution(log_weights, axis: int = -1) -> np.ndarray:
    """softmax(log_weights) along `axis`: q_S over a candidate set, or q over a full support. Same shape."""
    a = np.asarray(log_weights, dtype=np.float64)
    return np.exp(a - np.expand_dims(_logsumexp(a, axis), axis))


def did_entropy(log_weights, axis: int = -1) -> np.ndarray:
    """H(softmax(log_weights)) in nats; (..., K) -> (...). H_S for a sample set, exact H(q) for a support.

    Naive: `q = exp(a) / sum(exp(a)); -sum(q * log(q))`. Entries of −inf (zero weight) contribute 0.
    """
    a = np.asarray(log_weights, dtype=np.float64)
    log_q = a - np.expand_dims(_logsumexp(a, axis), axis)
    q = np.exp(log_q)
    return -np.sum(q * np.where(q > 0, log_q, 0.0), axis=axis)


def exact_did_entropy(log_ratio_all) -> float:
    """Exact sequence-level H(q) given d(y) for every response of an enumerable world: (|Y|,) -> float."""
    a = np.asarray(log_ratio_all, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"expected one log-ratio per response, shape (|Y|,), got {a.shape}")
    return float(did_entropy(a))


def effective_sample_size(log_weights, axis: int = -1) -> np.ndarray:
    """1/Σ softmax(log_weights)² ∈ [1, K]; (..., K) -> (...)."""
    q = did_distribution(log_weights, axis)
    return 1.0 / np.sum(q * q, axis=axis)


def importance_log_weights(log_ratio, log_proposal) -> np.ndarray:
    """log ω = d − log p (for p = π this is −ℓ_ref). (..., K) -> (..., K)."""
    return np.asarray(log_ratio, dtype=np.float64) - np.asarray(log_proposal, dtype=np.float64)


def log_partition_estimate(log_ratio, log_proposal, axis: int = -1) -> np.ndarray:
    """log Ẑ = log((1/K) Σ ω_i), Ẑ unbiased for Z = Σ_y π(y)/π_ref(y). (..., K) -> (...)."""
    lw = importance_log_weights(log_ratio, log_proposal)
    return _logsumexp(lw, axis) - np.log(lw.shape[axis])


def snis_entropy(log_ratio, log_proposal, axis: int = -1) -> np.ndarray:
    """Ĥ = log Ẑ − Σ ω̃_i d_i, the importance-sampling estimate of H(q) (module docstring). (..., K) -> (...)."""
    d = np.asarray(log_ratio, dtype=np.float64)
    lw = importance_log_weights(d, log_proposal)
    w_norm = did_distribution(lw, axis)
    return log_partition_estimate(d, log_proposal, axis) - np.sum(w_norm * d, axis=axis)


def snis_ess(log_ratio, log_proposal, axis: int = -1) -> np.ndarray:
    """Effective sample size 1/Σ ω̃² of the importance weights. (..., K) -> (...)."""
    return effective_sample_size(importance_log_weights(log_ratio, log_proposal), axis)


def pair_did_entropy(log_ratio_chosen, log_ratio_rejected) -> np.ndarray:
    """H of q over the pair {y_w, y_l}: binary entropy of σ(d_w − d_l), in [0, log 2]. (N,), (N,) -> (N,)."""
    return did_entropy(np.stack([np.asarray(log_ratio_chosen, float), np.asarray(log_ratio_rejected, float)], -1))


@dataclass(frozen=True)
class EntropyEstimate:
    """One DID entropy estimate with its percentile-bootstrap interval."""

    estimator: str   # "restricted" (H_S over the sample set) or "snis" (estimate of H(q))
    k: int           # number of samples used
    estimate: float  # nats
    ci_low: float    # percentile bootstrap bounds, nats
    ci_high: float
    ess: float       # 1/Σq_S² for "restricted", 1/Σω̃² for "snis"
    level: float     # confidence level of the interval
    n_boot: int      # bootstrap resamples

    def as_dict(self) -> dict:
        return asdict(self)


def _estimate(estimator: Estimator, d: np.ndarray, log_p: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if estimator == "restricted":
        return did_entropy(d), effective_sample_size(d)
    if estimator == "snis":
        if log_p is None:
            raise ValueError("the SNIS estimator needs the proposal's log-probs")
        return snis_entropy(d, log_p), snis_ess(d, log_p)
    raise ValueError(f"estimator must be 'restricted' or 'snis', got {estimator!r}")


def bootstrap_replicates(log_ratio, log_proposal=None, *, estimator: Estimator = "snis", n_boot: int = 1000,
                         rng: np.random.Generator) -> np.ndarray:
    """Estimator on `n_boot` resamples (with replacement) of the K samples: (..., K) -> (..., n_boot).

    Each leading index gets its own resamples. Naive: `[est(d[idx]) for idx in rng.integers(0, K, (B, K))]`.
    """
    d = np.asarray(log_ratio, dtype=np.float64)
    k = d.shape[-1]
    idx = rng.integers(0, k, size=d.shape[:-1] + (n_boot, k))        # (..., B, K)
    d_b = np.take_along_axis(d[..., None, :], idx, axis=-1)           # (..., B, K)
    lp_b = None
    if log_proposal is not None:
        lp = np.broadcast_to(np.asarray(log_proposal, dtype=np.float64), d.shape)
        lp_b = np.take_along_axis(lp[..., None, :], idx, axis=-1)
    return _estimate(estimator, d_b, lp_b)[0]


def percentile_interval(replicates, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) percentile bounds along the last axis: (..., B) -> (...), (...)."""
    lo, hi = np.quantile(np.asarray(replicates, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2], axis=-1)
    return lo, hi


def estimate_did_entropy(log_ratio, log_proposal=None, *, estimator: Estimator = "snis", n_boot: int = 1000,
                         level: float = 0.95, seed: int = 0) -> EntropyEstimate:
    """One estimate over K samples (d (K,), log p (K,)) with a seeded percentile-bootstrap interval."""
    d = np.asarray(log_ratio, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"expected (K,) log-ratios with K >= 1, got shape {d.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    lp = None if log_proposal is None else np.asarray(log_proposal, dtype=np.float64)
    est, ess = _estimate(estimator, d, lp)
    reps = bootstrap_replicates(d, lp, estimator=estimator, n_boot=n_boot, rng=np.random.default_rng(seed))
    lo, hi = percentile_interval(reps, level)
    return EntropyEstimate(estimator, int(d.size), float(est), float(lo), float(hi), float(ess), level, n_boot)


def entropy_vs_k(log_ratio, log_proposal=None, ks: tuple[int, ...] | list[int] | None = None, *,
                 n_boot: int = 500, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """How the estimates move with K: both estimators on the first k samples for each k in `ks`.

    d, log p: (K,). `ks` defaults to powers of two up to K (and K). Returns one row per (k, estimator)
    with the EntropyEstimate fields; the "snis" rows only when `log_proposal` is given.
    """
    d = np.asarray(log_ratio, dtype=np.float64)
    k_max = d.size
    if ks is None:
        ks = sorted({2 ** i for i in range(1, int(np.log2(max(k_max, 2))) + 1)} | {k_max})
    rows = []
    for k in ks:
        if not 1 <= k <= k_max:
            raise ValueError(f"k={k} outside [1, {k_max}]")
        for est in ("restricted", "snis") if log_proposal is not None else ("restricted",):
            lp = None if log_proposal is None else np.asarray(log_proposal, dtype=np.float64)[:k]
            rows.append(estimate_did_entropy(d[:k], lp, estimator=est, n_boot=n_boot, level=level,  # type: ignore[arg-type]
                                             seed=seed).as_dict())
    return pd.DataFrame(rows)


def summarize_samples(samples: pd.DataFrame, *, group: str = "prompt_index", n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per prompt, both estimators over its samples (a `sampling.sample_did_entropy` table).

    Needs `log_ratio` and `logp_proposal`. Returns one row per group with `k`, and for e in
    (restricted, snis): `{e}_entropy, {e}_ci_low, {e}_ci_high, {e}_ess`.
    """
    rows = []
    for key, g in samples.groupby(group, sort=True):
        row: dict = {group: key, "k": len(g)}
        for est in ("restricted", "snis"):
            e = estimate_did_entropy(g["log_ratio"].to_numpy(), g["logp_proposal"].to_numpy(), estimator=est,
                                     n_boot=n_boot, level=level, seed=seed)
            row.update({f"{est}_entropy": e.estimate, f"{est}_ci_low": e.ci_low, f"{est}_ci_high": e.ci_high,
                        f"{est}_ess": e.ess})
        rows.append(row)
    return pd.DataFrame(rows)
