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
  1/Σ ω̃² = (Σω)²/Σω². The weights are *not* softmax(d): that is H_S's.
  Its interval is a studentised m-out-of-n bootstrap, widened by a Student-t excess whose degrees of
  freedom come from the largest weight's share (`snis_interval`, docs/ANALYTICS.md §2). It is not
  calibrated: it covered 86–99.5 % for a nominal 95 % over 24 enumerable test cases
  (`SNIS_MEASURED_COVERAGE`). The percentile bootstrap it replaced covered 79–95 %, because the samples that miss the rare
  high-weight responses look *better* (higher ESS, smaller spread) exactly when Ĥ is too low. For language models Z sums over all
  sequences and ω has an enormous variance, so ESS ≈ 1 is the norm there; Ĥ is meaningful in small
  worlds and as a within-run comparison, and the ESS says how far to trust it.
* **Exact entropy** on an enumerable world: H(q) with q = softmax(d) over every response.

Arrays: the last axis holds the K samples; leading axes broadcast (e.g. (P, K) for P prompts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd

Estimator = Literal["restricted", "snis"]

RELIABLE_ESS = 10.0
"""An estimate whose ESS is below this is flagged unreliable (greyed out in the dashboard). With fewer than
~10 effective samples the variance that studentises the interval is itself estimated from a handful of
weights, and the bench's coverage was measured on samples whose median ESS was 15 or more."""
SUBSAMPLE_FRACTION = 0.25
"""m/K of the m-out-of-n bootstrap behind the SNIS interval (m = max(MIN_SUBSAMPLE, round(K/4)));
chosen on bench/entropy_coverage.py's worlds, see docs/ANALYTICS.md §2."""
MIN_SUBSAMPLE = 4
SNIS_MEASURED_COVERAGE = (0.860, 0.995)
"""Lowest and highest coverage of `snis_interval`'s 95 % interval measured over the 24 (world, K) cells of
`python bench/entropy_coverage.py --seeds 400 --worlds all` (K = 32 and 256; 1000 resamples): six worlds the
interval was chosen beside and six held-out lab worlds (docs/ANALYTICS.md §2). The DID entropy page states it
beside the interval; re-measure and update it whenever `snis_interval` changes."""


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


def snis_standard_error(log_ratio, log_proposal, axis: int = -1) -> np.ndarray:
    """Delta-method standard error of Ĥ = log Ā − B̄/Ā (A = ω, B = ω d). (..., K) -> (...); NaN for K < 2.

    Influence of sample i: ψ_i = K ω̃_i (1 − (d_i − μ̂)) − 1 with μ̂ = Σ ω̃ d (Σψ = 0), and
    se = sqrt(Σ ψ² / (K (K − 1))). Naive: the sample std of ψ over √K.
    """
    d = np.moveaxis(np.asarray(log_ratio, dtype=np.float64), axis, -1)
    lp = np.moveaxis(np.broadcast_to(np.asarray(log_proposal, dtype=np.float64), np.shape(log_ratio)), axis, -1)
    k = d.shape[-1]
    w_norm = did_distribution(d - lp)                                  # (..., K) ω̃
    mu = np.sum(w_norm * d, axis=-1, keepdims=True)                    # (..., 1)
    psi = k * w_norm * (1.0 - (d - mu)) - 1.0                          # (..., K)
    if k < 2:
        return np.full(d.shape[:-1], np.nan)
    return np.sqrt(np.sum(psi * psi, axis=-1) / (k * (k - 1)))


def subsample_size(k: int, fraction: float = SUBSAMPLE_FRACTION) -> int:
    """m of the m-out-of-n bootstrap for K samples: max(MIN_SUBSAMPLE, round(fraction·K)), at most K."""
    return int(min(k, max(MIN_SUBSAMPLE, round(fraction * k))))


def snis_max_weight_ess(log_ratio, log_proposal, axis: int = -1) -> np.ndarray:
    """1/max ω̃, the share of the largest normalised weight inverted: (..., K) -> (...), in [1, ESS].

    The min-entropy (Rényi-∞) effective sample size: never above the ESS 1/Σω̃², and 1 when one draw
    carries all the weight. `snis_interval` takes its t degrees of freedom from it (the Kish ESS
    overstates a sample dominated by a few weights: every weight counts, not the largest one)."""
    return 1.0 / np.max(did_distribution(importance_log_weights(log_ratio, log_proposal), axis), axis=axis)


def t_quantile(level: float, df) -> np.ndarray:
    """Two-sided Student-t quantile t_{(1+level)/2, ν} for real ν ≥ 1, elementwise (pure numpy; relative error
    below 1e-3, ν capped at 1000, where t is 0.12 % above the normal quantile).

    With t = √ν·tan θ, P(|T| ≤ t) = ∫_0^θ cos^{ν−1}u du / ∫_0^{π/2} cos^{ν−1}u du, a smooth integrand on a
    bounded range: integrate it on a grid, invert by interpolation. Checked against scipy.stats.t.ppf in
    tests/test_entropy.py; ν = 1 is tan(level·π/2) exactly."""
    nu = np.minimum(np.asarray(df, dtype=np.float64), 1000.0)
    flat = nu.reshape(-1, 1)
    theta = np.linspace(0.0, np.pi / 2, 4097)
    f = np.cos(theta)[None, :] ** (flat - 1.0)                       # (n, G); at π/2: 0 (ν > 1) or 1 (ν = 1)
    cum = np.concatenate([np.zeros((flat.shape[0], 1)), np.cumsum((f[:, 1:] + f[:, :-1]) / 2, axis=1)], axis=1)
    cum /= cum[:, -1:]
    j = np.clip(np.sum(cum < level, axis=1), 1, theta.size - 1)      # cum[j-1] < level <= cum[j]
    c0, c1 = np.take_along_axis(cum, (j - 1)[:, None], 1)[:, 0], np.take_along_axis(cum, j[:, None], 1)[:, 0]
    th = theta[j - 1] + (level - c0) / (c1 - c0) * (theta[1] - theta[0])
    return (np.sqrt(flat[:, 0]) * np.tan(th)).reshape(nu.shape)


def snis_interval(log_ratio, log_proposal, *, n_boot: int = 1000, level: float = 0.95,
                  rng: np.random.Generator, fraction: float = SUBSAMPLE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Interval for Ĥ: a studentised m-out-of-n bootstrap with a floored se*, each side widened by the
    Student-t excess t_ν − z on ν = 1/max ω̃ − 1 degrees of freedom, clipped at 0 (H ≥ 0).
    (..., K) -> (...), (...). docs/ANALYTICS.md §2 has the bench behind it.

    Bootstrap: each of `n_boot` resamples draws m = subsample_size(K) of the K samples with replacement
    and gives T* = (Ĥ*_m − Ĥ) / s*, s*² = se*_m² + (se·√K/m)², with se the delta-method standard error of
    the K samples (`snis_standard_error`). T is nearly scale-free, so T*_m stands in for the size-K pivot,
    and drawing m < K exaggerates the tail the K samples cannot show (the high-weight responses none of
    them hit). The floor (se·√K/m)² is 1/m of the variance se²·K/m a size-m resample is expected to show
    (one pseudo-sample's worth): without it a resample that repeats one or two responses (se* ≈ 0) sends
    T* to ±∞ and the interval to ±10¹⁵ on small supports.
    Widening: x = t_{(1+level)/2, ν} − z_{(1+level)/2} with ν = max(1, 1/max ω̃ − 1) (`snis_max_weight_ess`).
    When a few weights dominate, every resample reshuffles the same few and T* understates the spread;
    x is then large (ν = 1: x = 10.7 at 95 %); with many comparable weights x → 0 and the bootstrap decides.
        interval = [Ĥ − (t*_{1−α/2} + x)·se,  Ĥ − (t*_{α/2} − x)·se] ∩ [0, ∞)
    se = 0 (one distinct sample): the interval is the point Ĥ. K < 2: NaN.

    Limits (bench/entropy_coverage.py, docs/ANALYTICS.md §2, issue 16): not calibrated. On the six worlds it was
    chosen beside it covers 89–99.5 % (6 of 12 cells in 93–97 %): where most of q sits on responses the proposal
    almost never draws (the lab's heavy-tail world, ≈ 52 % of q unseen by K = 256 draws on average) ≈ 89 % at
    K = 256, and on small supports 97–99.5 %. On six held-out lab worlds it covers 86–98 % (4 of 12 in 93–97 %;
    under-covering at K = 32 on flat supports and at K = 256 on heavy-tailed ones); the range over all 24 is
    `SNIS_MEASURED_COVERAGE`. Replacing m = K/4 by a missing-mass-matched m, resampling from the known
    proposal on the seen responses, or m ∈ {K/8, K/2, K} did not do better on held-out seeds (same section).
    """
    d = np.asarray(log_ratio, dtype=np.float64)
    lp = np.broadcast_to(np.asarray(log_proposal, dtype=np.float64), d.shape)
    k = d.shape[-1]
    est, se = snis_entropy(d, lp), snis_standard_error(d, lp)
    if k < 2:
        nan = np.full(d.shape[:-1], np.nan)
        return nan, nan.copy()
    m = subsample_size(k, fraction)
    idx = rng.integers(0, k, size=d.shape[:-1] + (n_boot, m))        # (..., B, m)
    d_b = np.take_along_axis(d[..., None, :], idx, axis=-1)           # (..., B, m)
    lp_b = np.take_along_axis(lp[..., None, :], idx, axis=-1)
    diff = snis_entropy(d_b, lp_b) - est[..., None]                   # (..., B)
    s_b = np.sqrt(snis_standard_error(d_b, lp_b) ** 2 + (se[..., None] * np.sqrt(k) / m) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(s_b > 0, diff / s_b, 0.0)                        # s_b = 0 only where se = 0
    t_lo, t_hi = np.quantile(t, [(1 - level) / 2, (1 + level) / 2], axis=-1)
    nu = np.maximum(snis_max_weight_ess(d, lp) - 1.0, 1.0)
    x = np.maximum(t_quantile(level, nu) - NormalDist().inv_cdf((1 + level) / 2), 0.0)
    with np.errstate(invalid="ignore"):
        lo = np.where(se > 0, est - (t_hi + x) * se, est)
        hi = np.where(se > 0, est - (t_lo - x) * se, est)
    return np.maximum(lo, 0.0), np.maximum(hi, 0.0)


def is_reliable(ess) -> np.ndarray:
    """ESS ≥ RELIABLE_ESS, elementwise (NaN: False)."""
    return np.asarray(ess, dtype=np.float64) >= RELIABLE_ESS


@dataclass(frozen=True)
class EntropyEstimate:
    """One DID entropy estimate with its bootstrap interval and effective sample size."""

    estimator: str   # "restricted" (H_S over the sample set) or "snis" (estimate of H(q))
    k: int           # number of samples used
    estimate: float  # nats
    ci_low: float    # interval bounds, nats (method in `interval`)
    ci_high: float
    ess: float       # 1/Σq_S² for "restricted", (Σω)²/Σω² for "snis"
    level: float     # confidence level of the interval
    n_boot: int      # bootstrap resamples
    interval: str = "percentile"   # "percentile" (restricted) or "studentised m-of-n, t-widened" (snis)
    reliable: bool = True          # ess >= RELIABLE_ESS

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
    """One estimate over K samples (d (K,), log p (K,)) with a seeded bootstrap interval.

    "snis": the t-widened studentised m-out-of-n bootstrap (`snis_interval`); "restricted": the percentile bootstrap
    over the sample set (H_S is a property of the set, not an estimate of H(q), docs/ANALYTICS.md §2).
    """
    d = np.asarray(log_ratio, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"expected (K,) log-ratios with K >= 1, got shape {d.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    lp = None if log_proposal is None else np.asarray(log_proposal, dtype=np.float64)
    est, ess = _estimate(estimator, d, lp)
    rng = np.random.default_rng(seed)
    if estimator == "snis":
        lo, hi = snis_interval(d, lp, n_boot=n_boot, level=level, rng=rng)
        method = "studentised m-of-n, t-widened"
    else:
        lo, hi = percentile_interval(bootstrap_replicates(d, lp, estimator=estimator, n_boot=n_boot, rng=rng), level)
        method = "percentile"
    return EntropyEstimate(estimator, int(d.size), float(est), float(lo), float(hi), float(ess), level, n_boot,
                           method, bool(is_reliable(ess)))


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
    (restricted, snis): `{e}_entropy, {e}_ci_low, {e}_ci_high, {e}_ess, {e}_reliable` (ESS ≥ RELIABLE_ESS).
    """
    rows = []
    for key, g in samples.groupby(group, sort=True):
        row: dict = {group: key, "k": len(g)}
        for est in ("restricted", "snis"):
            e = estimate_did_entropy(g["log_ratio"].to_numpy(), g["logp_proposal"].to_numpy(), estimator=est,
                                     n_boot=n_boot, level=level, seed=seed)
            row.update({f"{est}_entropy": e.estimate, f"{est}_ci_low": e.ci_low, f"{est}_ci_high": e.ci_high,
                        f"{est}_ess": e.ess, f"{est}_reliable": e.reliable})
        rows.append(row)
    return pd.DataFrame(rows)
