"""Checkpoint A vs checkpoint B on the same pairs: per-example deltas, top movers, and the DID q_{B/A}.
A and B may come from two runs scored on the same dataset and reference (`compare_runs`).

Pure pandas/numpy over a `ws.pairs` table. Either side may be "reference" (its values are the
`ref_*` columns). The DID between the two treats A as the reference and B as the policy:
d_{B/A}(y) = ℓ_B(y) − ℓ_A(y), and over the candidate set S = {y_w, y_l} of each pair
q_{B/A} = softmax(d_{B/A}(y_w), d_{B/A}(y_l)) — estimator 2 of docs/REFERENCE.md §3 with the pair as S —
with entropy H ∈ [0, log 2] (`entropy.pair_did_entropy`). The sample-based estimators of the same
DID come from `sampling.sample_did_entropy(policy=B, reference=A, ...)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from did_core.entropy import did_distribution, effective_sample_size, pair_did_entropy
from did_core.losses import Aggregation, aggregate_logp, log_margin, preference_loss

REFERENCE = "reference"


def model_scores(pairs: pd.DataFrame, model: str, aggregation: Aggregation = "sum") -> pd.DataFrame:
    """One model's sequence scores indexed by `pair_id`: `logp_chosen`, `logp_rejected` (aggregated),
    `ref_logp_chosen`, `ref_logp_rejected`. "reference" reads the `ref_*` columns."""
    if model == REFERENCE:
        rows = pairs.groupby("pair_id", sort=False).first()
        lw, ll = rows["ref_logp_chosen"], rows["ref_logp_rejected"]
    else:
        rows = pairs[pairs["model"] == model].set_index("pair_id")
        if rows.empty:
            raise ValueError(f"model {model!r} is not in the pairs table (have {sorted(pairs['model'].unique())})")
        if rows.index.has_duplicates:
            raise ValueError(f"model {model!r} has several rows for one pair_id")
        lw, ll = rows["logp_chosen"], rows["logp_rejected"]
    nw, nl = rows["n_tokens_chosen"], rows["n_tokens_rejected"]
    return pd.DataFrame({
        "logp_chosen": aggregate_logp(lw, nw, aggregation), "logp_rejected": aggregate_logp(ll, nl, aggregation),
        "ref_logp_chosen": aggregate_logp(rows["ref_logp_chosen"], nw, aggregation),
        "ref_logp_rejected": aggregate_logp(rows["ref_logp_rejected"], nl, aggregation)}, index=rows.index)


def compare_checkpoints(pairs: pd.DataFrame, a: str, b: str, beta: float,
                        aggregation: Aggregation = "sum") -> pd.DataFrame:
    """Per pair present in both A and B (index `pair_id`, A's order), float64 columns:

    `logp_chosen_a/_b`, `logp_rejected_a/_b`, `log_margin_a/_b`, `dpo_loss_a/_b` (each against the
    reference, β), and `delta_*` = B − A for logp_chosen, logp_rejected, log_margin, dpo_loss;
    `did_ba_chosen`, `did_ba_rejected` (d_{B/A}(y_w), d_{B/A}(y_l), equal to the logp deltas),
    `q_ba_chosen` (q_{B/A}(y_w) over the pair) and `did_entropy_ba` (its entropy, nats).
    """
    return compare_scores(model_scores(pairs, a, aggregation), model_scores(pairs, b, aggregation), beta, beta)


def compare_runs(pairs_a: pd.DataFrame, a: str, beta_a: float, pairs_b: pd.DataFrame, b: str, beta_b: float,
                 aggregation: Aggregation = "sum") -> pd.DataFrame:
    """`compare_checkpoints` across two runs: A is model `a` of run A's `ws.pairs` table, B model `b` of
    run B's, each side's DPO loss at its own run's β. Only meaningful for runs scored on the same
    dataset against the same reference score (`did_core.sweep.why_not_comparable`)."""
    return compare_scores(model_scores(pairs_a, a, aggregation), model_scores(pairs_b, b, aggregation), beta_a, beta_b)


def compare_scores(sa: pd.DataFrame, sb: pd.DataFrame, beta_a: float, beta_b: float) -> pd.DataFrame:
    """The comparison table of two `model_scores` frames (see `compare_checkpoints`), A's DPO loss at
    `beta_a` and B's at `beta_b`."""
    common = sa.index.intersection(sb.index, sort=False)
    sa, sb = sa.loc[common], sb.loc[common]
    out = pd.DataFrame(index=common)
    for tag, s, beta in (("a", sa, beta_a), ("b", sb, beta_b)):
        out[f"logp_chosen_{tag}"] = s["logp_chosen"]
        out[f"logp_rejected_{tag}"] = s["logp_rejected"]
        out[f"log_margin_{tag}"] = log_margin(s["logp_chosen"], s["logp_rejected"])
        out[f"dpo_loss_{tag}"] = preference_loss(s["logp_chosen"], s["logp_rejected"], s["ref_logp_chosen"],
                                                 s["ref_logp_rejected"], beta=beta)
    for col in ("logp_chosen", "logp_rejected", "log_margin", "dpo_loss"):
        out[f"delta_{col}"] = out[f"{col}_b"] - out[f"{col}_a"]
    out["did_ba_chosen"] = out["delta_logp_chosen"]
    out["did_ba_rejected"] = out["delta_logp_rejected"]
    d = np.stack([out["did_ba_chosen"].to_numpy(), out["did_ba_rejected"].to_numpy()], -1)   # (N, 2)
    out["q_ba_chosen"] = did_distribution(d)[:, 0] if len(out) else np.empty(0)
    out["did_entropy_ba"] = pair_did_entropy(d[:, 0], d[:, 1]) if len(out) else np.empty(0)
    return out


def top_movers(table: pd.DataFrame, column: str = "delta_log_margin", n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The n pairs with the largest increase and the n with the largest decrease of `column`.

    Returns (up, down): up sorted by descending value (only values > 0), down by ascending (only < 0);
    ties keep table order.
    """
    v = table[column]
    up = table[v > 0].sort_values(column, ascending=False, kind="stable").head(n)
    down = table[v < 0].sort_values(column, ascending=True, kind="stable").head(n)
    return up, down


def bootstrap_mean_ci(values, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of (N,) values (NaN skipped); (nan, nan) when empty."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))   # (B, N)
    lo, hi = np.quantile(v[idx].mean(-1), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class ComparisonSummary:
    """Summary of A → B over the common pairs."""

    n: int
    mean_delta_logp_chosen: float
    mean_delta_logp_rejected: float
    mean_delta_log_margin: float
    share_margin_up: float          # share of pairs whose log-margin grew
    share_both_down: float          # share where both ℓ(y_w) and ℓ(y_l) fell (displacement from A to B)
    mean_did_entropy_ba: float      # mean over pairs of H(q_{B/A}) on {y_w, y_l}
    did_entropy_ci_low: float       # percentile bootstrap over pairs
    did_entropy_ci_high: float
    mean_pair_ess: float            # mean of 1/Σq² over the pairs, in [1, 2]

    def as_dict(self) -> dict:
        return asdict(self)


def summarize_comparison(table: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95,
                         seed: int = 0) -> ComparisonSummary:
    """Means and shares of a `compare_checkpoints` table, with a bootstrap interval on mean H(q_{B/A})."""
    d = np.stack([table["did_ba_chosen"].to_numpy(), table["did_ba_rejected"].to_numpy()], -1)
    lo, hi = bootstrap_mean_ci(table["did_entropy_ba"], n_boot=n_boot, level=level, seed=seed)
    nan = float("nan")
    return ComparisonSummary(
        n=len(table),
        mean_delta_logp_chosen=float(table["delta_logp_chosen"].mean()) if len(table) else nan,
        mean_delta_logp_rejected=float(table["delta_logp_rejected"].mean()) if len(table) else nan,
        mean_delta_log_margin=float(table["delta_log_margin"].mean()) if len(table) else nan,
        share_margin_up=float((table["delta_log_margin"] > 0).mean()) if len(table) else nan,
        share_both_down=float(((d[:, 0] < 0) & (d[:, 1] < 0)).mean()) if len(table) else nan,
        mean_did_entropy_ba=float(table["did_entropy_ba"].mean()) if len(table) else nan,
        did_entropy_ci_low=lo, did_entropy_ci_high=hi,
        mean_pair_ess=float(effective_sample_size(d).mean()) if len(table) else nan)
