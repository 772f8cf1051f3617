"""Per-example predictors of likelihood displacement: CHES (Razin et al. 2024) and squeezing (Ren &
Sutherland, ICLR 2025), and the statistics the dashboard and the benchmark show about them.

Formulas and readings: docs/ANALYTICS.md, "CHES and squeezing". Pure functions, no I/O:

- `head_stats`: one head chunk's (N, V) logits -> log π(target), top-1 probability and next-token
  entropy, from one exp pass (the engine calls it on every chunk it already computes);
- `ches_rows`: the reference's head inputs (N, H) of a batch -> CHES and its length-normalised form
  per pair (the engine calls it in the reference's pass; float64);
- `spearman`, `spearman_interval` (`fisher_z_interval` above `BOOTSTRAP_MAX_N` pairs),
  `displaced_by_quantile`, `ches_vs_displacement`: over a `ws.pairs` table (numpy / pandas);
- `drop_top_ches`: which pairs survive the authors' filter (the lowest-CHES ones are kept).

torch is imported by the two tensor functions only: the dashboard's pages use the statistics, and
importing torch there cost the first page that showed CHES or squeezing ~1.5 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from did_core import losses

if TYPE_CHECKING:
    import torch

# -- tensors (the engine) ----------------------------------------------------------------------------


def head_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log π(target), max_v π(v) and H = −Σ_v π(v) log π(v) of each row's next-token distribution.

    logits: (N, V) unnormalised scores, any float dtype (computed in float32 at least).
    targets: (N,) int64 token ids.
    Returns three (N,) tensors in float32 (float64 for float64 logits).

    Naive equivalent::

        lp = torch.log_softmax(logits.double(), -1)
        lp.gather(-1, targets[:, None])[:, 0], lp.exp().amax(-1), -(lp.exp() * lp).sum(-1)

    With a = z − max(z) and Z = Σ exp(a): log π(target) = a[target] − log Z, the top-1 probability is
    exp(0)/Z = 1/Z, and H = log Z − Σ exp(a)·a / Z. One exp pass over the chunk, no log-softmax
    materialised beside the logits; tokens with −inf logits contribute 0 (not 0·−inf).
    """
    import torch

    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    a = z - z.amax(dim=-1, keepdim=True)  # (N, V), <= 0, max 0 per row
    e = torch.exp(a)  # (N, V)
    zsum = e.sum(dim=-1)  # (N,) >= 1
    log_z = torch.log(zsum)
    logp = a.gather(-1, targets.long()[:, None])[:, 0] - log_z  # (N,)
    weighted = e.mul_(a).sum(dim=-1)  # (N,) Σ e^a·a
    bad = torch.isnan(weighted)  # a row with a −inf logit: 0·−inf; checked on (N,), not on (N, V)
    if bool(bad.any()):
        rows = a[bad]
        weighted[bad] = torch.where(rows > -math.inf, torch.exp(rows) * rows, torch.zeros_like(rows)).sum(dim=-1)
    entropy = (log_z - weighted / zsum).clamp(0.0, math.log(a.shape[-1]))  # (N,)
    return logp, 1.0 / zsum, entropy


def ches_rows(hidden: torch.Tensor, lengths: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """CHES and its length-normalised variant per pair, in float64.

    hidden: (N, H) head inputs of the rows that predict each response token, responses ordered
    (c_0, r_0, c_1, r_1, …) with lengths (T_0, T_1, …) summing to N (the engine's flat layout).
    Returns two (B,) float64 tensors, B = len(lengths) // 2:

        S⁺ = Σ_t h_t(x, y_w),  S⁻ = Σ_t h_t(x, y_l),  CHES = ⟨S⁺, S⁻⟩ − ‖S⁺‖²
        ches_norm: the same with S⁺/T_w and S⁻/T_l.

    NaN for a pair with an empty response (nothing of it was scored). Naive equivalent: a Python
    loop over pairs summing the rows of each response.
    """
    import torch

    n_resp = len(lengths)
    h = hidden.double()  # (N, H)
    owner = torch.repeat_interleave(torch.arange(n_resp, device=h.device),
                                    torch.tensor(list(lengths), device=h.device))  # (N,) response index
    sums = torch.zeros(n_resp, h.shape[-1], dtype=torch.float64, device=h.device).index_add_(0, owner, h)  # (2B, H)
    t = torch.tensor(list(lengths), dtype=torch.float64, device=h.device)  # (2B,)
    empty = (t[0::2] == 0) | (t[1::2] == 0)  # (B,)

    def ches(sp: torch.Tensor, sm: torch.Tensor) -> torch.Tensor:  # (B, H), (B, H) -> (B,)
        out = (sp * sm).sum(-1) - (sp * sp).sum(-1)
        return torch.where(empty, torch.full_like(out, math.nan), out)

    means = sums / t.clamp(min=1)[:, None]  # (2B, H)
    return ches(sums[0::2], sums[1::2]), ches(means[0::2], means[1::2])


# -- statistics over pairs (the views, the benchmark) ------------------------------------------------


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share the mean of their positions), 0-based, float64.

    x: (..., n). Naive equivalent (one row): `pandas.Series(row).rank(method="average") - 1`.
    """
    x = np.asarray(x, np.float64)
    order = np.argsort(x, axis=-1, kind="stable")  # (..., n)
    s = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    idx = np.broadcast_to(np.arange(n), x.shape)
    starts = np.concatenate([np.ones(x.shape[:-1] + (1,), bool), s[..., 1:] != s[..., :-1]], axis=-1)
    ends = np.concatenate([s[..., 1:] != s[..., :-1], np.ones(x.shape[:-1] + (1,), bool)], axis=-1)
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=-1)  # first position of each tie group
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, idx, n), -1), axis=-1), -1)  # its last
    ranks = np.empty_like(x)
    np.put_along_axis(ranks, order, (first + last) / 2.0, axis=-1)
    return ranks


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r per row of (..., n) arrays (NaN where a row is constant)."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the average ranks (NaN pairs dropped; NaN when
    fewer than 3 remain or one side is constant)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    return float(_pearson_rows(ranks(x[ok]), ranks(y[ok])))


FISHER_Z = "Fisher z, Bonett–Wright se"
"""`spearman_interval`'s method label above `BOOTSTRAP_MAX_N` pairs."""

BOOTSTRAP_MAX_N = 2000
"""Largest number of valid pairs whose Spearman interval is the exact bootstrap (1,000 resamples, each
re-ranked: ~0.2 s CPU at this n); above it `spearman_interval` gives the Fisher-z interval with the
Bonett–Wright standard error, which matches the bootstrap's endpoints to ~1e-3 from n ≈ 3,000 on
(tests/test_ches.py) and costs one ranking."""


def _tie_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (n,) -> (order, starts, group): the stable sort order, where each run of equal values starts
    in it, and each element's run index (0-based, in sorted order)."""
    order = np.argsort(x, kind="stable")
    s = x[order]
    new = np.concatenate([[True], s[1:] != s[:-1]])
    group = np.empty(len(x), np.intp)
    group[order] = np.cumsum(new) - 1
    return order, np.flatnonzero(new), group


def _centred_ranks(w: np.ndarray, order: np.ndarray, starts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each pair's average rank in each resample, minus (n − 1)/2: (k, n) from copies w (k, n) and the
    full sample's `_tie_groups`."""
    t = np.add.reduceat(w[:, order], starts, axis=1)  # (k, G) copies per run of equal values
    return (np.cumsum(t, axis=1) - (t + 1) / 2 - (w.shape[1] - 1) / 2)[:, group]


def _bootstrap_spearman(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman's ρ of `n_boot` resamples of the pairs (with replacement), each re-ranked: (n_boot,).

    Naive equivalent: for each resample `i = rng.integers(0, n, n)`, `spearman(x[i], y[i])`. A resample
    is its counts w (n,) per original pair, so it is ranked without sorting it: a pair's average rank in
    the resample is (copies of smaller values) + (copies of its own value − 1)/2, from one cumulative sum
    over the full sample's order, and ρ is the w-weighted Pearson r of those ranks (their mean is
    (n − 1)/2 in every resample). Chunks of resamples bound memory to ~4M values (32 MB) per array.
    """
    n = len(x)
    gx, gy = _tie_groups(x), _tie_groups(y)
    chunk = max(1, (1 << 22) // n)
    out = []
    for b in range(0, n_boot, chunk):
        k = min(chunk, n_boot - b)
        idx = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]  # the draws of the re-ranking code before
        w = np.bincount(idx.ravel(), minlength=k * n).reshape(k, n).astype(np.float64)  # (k, n) copies
        rx, ry = _centred_ranks(w, *gx), _centred_ranks(w, *gy)
        wx = w * rx
        den = np.sqrt(np.einsum("ij,ij->i", wx, rx) * np.einsum("ij,ij->i", w * ry, ry))
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(den > 0, np.einsum("ij,ij->i", wx, ry) / np.where(den > 0, den, 1.0), np.nan))
    return np.concatenate(out) if out else np.empty(0)


def fisher_z_interval(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for Spearman's ρ from n pairs: tanh(atanh ρ ± z·se), se = sqrt((1 + ρ²/2)/(n − 3))
    (Bonett & Wright 2000, Psychometrika 65:23–28); (nan, nan) when ρ is NaN or n ≤ 3."""
    if math.isnan(rho) or n <= 3:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + level / 2)
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    c = math.atanh(rho) if abs(rho) < 1 else math.copysign(math.inf, rho)
    return math.tanh(c - z * se), math.tanh(c + z * se)


def spearman_interval(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0, bootstrap_max_n: int = BOOTSTRAP_MAX_N) -> dict:
    """Spearman's ρ with an interval, and which interval it is.

    Up to `bootstrap_max_n` valid pairs: the percentile bootstrap over pairs (`n_boot` resamples with
    replacement, i.i.d. pairs, each resample re-ranked; seeded). Above: the Fisher-z interval with the
    Bonett–Wright se (`fisher_z_interval`), since the bootstrap's cost grows as n_boot·n (~5 s CPU at
    n = 60,000) while the two agree to ~1e-3 there.

    Returns {"rho", "lo", "hi", "n", "method"}; method is "bootstrap (N resamples)" or
    "Fisher z, Bonett–Wright se"; lo/hi are NaN when fewer than 3 valid pairs (or ρ is NaN).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    rho = spearman(x, y)
    if n > bootstrap_max_n:
        lo, hi = fisher_z_interval(rho, n, level)
        return {"rho": rho, "lo": lo, "hi": hi, "n": n, "method": FISHER_Z}
    method = f"bootstrap ({n_boot:,} resamples)"
    if n < 3:
        return {"rho": rho, "lo": math.nan, "hi": math.nan, "n": n, "method": method}
    boots = _bootstrap_spearman(x, y, n_boot, np.random.default_rng(seed))
    boots = boots[np.isfinite(boots)]
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a]) if len(boots) else (math.nan, math.nan)
    return {"rho": rho, "lo": float(lo), "hi": float(hi), "n": n, "method": method}


def ches_vs_displacement(pairs: pd.DataFrame, model: str, column: str = "ches",
                         per_token: bool = False) -> pd.DataFrame:
    """One checkpoint's rows: pair_id, CHES (`column`: ches or ches_norm) and
    d_w = Δ log π(y_w) = logp_chosen − ref_logp_chosen (policy minus reference, summed log-probs;
    divided by the chosen response's token count with `per_token`)."""
    g = pairs[pairs["model"] == model]
    agg = "mean" if per_token else "sum"
    d = losses.log_ratio(*(losses.aggregate_logp(g[c], g["n_tokens_chosen"], agg)
                           for c in ("logp_chosen", "ref_logp_chosen")))
    return pd.DataFrame({"pair_id": g["pair_id"].astype(str).to_numpy(), "ches": g[column].to_numpy(np.float64),
                         "delta_logp_chosen": d})


def displaced_by_quantile(ches: np.ndarray, delta_logp_chosen: np.ndarray, n_bins: int = 5) -> pd.DataFrame:
    """Share of pairs with Δ log π(y_w) < 0 per CHES quantile bin (bin 1 = lowest CHES).

    Bins are equal-count over the rank order (ties broken by position), so every bin has ⌊n/k⌋ or
    ⌈n/k⌉ pairs. Columns: bin, n, ches_lo, ches_hi, displaced_share.
    """
    c, d = np.asarray(ches, np.float64), np.asarray(delta_logp_chosen, np.float64)
    ok = np.isfinite(c) & np.isfinite(d)
    c, d = c[ok], d[ok]
    order = np.argsort(c, kind="stable")
    rows = []
    for b, idx in enumerate(np.array_split(order, n_bins) if len(c) else []):
        if len(idx):
            rows.append({"bin": b + 1, "n": len(idx), "ches_lo": float(c[idx].min()), "ches_hi": float(c[idx].max()),
                         "displaced_share": float(np.mean(d[idx] < 0))})
    return pd.DataFrame(rows, columns=["bin", "n", "ches_lo", "ches_hi", "displaced_share"])


def correlations(pairs: pd.DataFrame, column: str = "ches", n_boot: int = 1000, seed: int = 0,
                 per_token: bool = False) -> pd.DataFrame:
    """Per checkpoint (in `pairs`' order): step, Spearman ρ(CHES, Δ log π(y_w)) with its 95% interval
    (`spearman_interval`; column method), the number of pairs and the share displaced (Δ log π(y_w) < 0)."""
    rows = []
    for model, g in pairs.groupby("model", sort=False):
        t = ches_vs_displacement(g, model, column, per_token)
        r = spearman_interval(t["ches"].to_numpy(), t["delta_logp_chosen"].to_numpy(), n_boot=n_boot, seed=seed)
        step = g["step"].iloc[0] if "step" in g else None
        rows.append({"model": model, "step": None if pd.isna(step) else int(step), **r,
                     "displaced_share": float(np.mean(t["delta_logp_chosen"] < 0)) if len(t) else math.nan})
    return pd.DataFrame(rows, columns=["model", "step", "rho", "lo", "hi", "n", "method", "displaced_share"])


def squeezing_curves(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean top-1 probability and mean next-token entropy (each a per-response token mean, then a mean
    over pairs) per model and side, the reference at step 0 (from the ref_* columns of any checkpoint).

    Columns: model, step, side ("chosen" | "rejected"), top1_prob, token_entropy.
    """
    columns = ["model", "step", "side", "top1_prob", "token_entropy"]
    if not len(pairs):
        return pd.DataFrame(columns=columns)
    cols = [f"{k}_{side}" for side in ("chosen", "rejected") for k in ("top1_prob", "token_entropy")]
    # means skip NaN (a response without squeezing); the ref_* values are the same on every row of a pair
    ref = pairs.loc[~pairs["pair_id"].duplicated(), [f"ref_{c}" for c in cols]].astype(np.float64).mean()
    by = pairs.groupby("model", sort=False)
    means, steps = by[cols].mean(), by["step"].first()
    sources = [("reference", 0, ref.rename(lambda c: c.removeprefix("ref_")))]
    sources += [(m, steps[m], means.loc[m]) for m in means.index]
    rows = [{"model": model, "step": None if pd.isna(step) else int(step), "side": side,
             **{k: float(mean[f"{k}_{side}"]) for k in ("top1_prob", "token_entropy")}}
            for model, step, mean in sources for side in ("chosen", "rejected")]
    return pd.DataFrame(rows, columns=columns)


def drop_top_ches(ches: pd.Series, q: float) -> pd.Series:
    """Boolean mask of the pairs kept when the top `q` percent by CHES are dropped.

    ches: one value per pair (index = pair_id). q in [0, 100]. Exactly round(n·q/100) pairs are
    dropped (n: all pairs), the highest CHES first (ties: the earlier pair first). A pair without a
    CHES (an empty response after truncation) cannot be ranked and is kept.
    Raises ValueError for q outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"--drop-top-ches must be a percentage in [0, 100], got {q}")
    values = ches.to_numpy(np.float64)
    n_drop = min(int(round(len(values) * q / 100)), int(np.isfinite(values).sum()))
    ranked = np.where(np.isfinite(values), values, -np.inf)
    order = np.argsort(-ranked, kind="stable")  # highest first; stable: the earlier pair first among ties
    keep = np.ones(len(values), dtype=bool)
    keep[order[:n_drop]] = False
    return pd.Series(keep, index=ches.index)
