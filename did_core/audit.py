"""Precision audit: how far the trainer's numbers (bf16/fp16 autocast) are from the exact ones, per
pair, against the size of the signal they are used to read. Pure pandas/numpy, no I/O.

For each (pair, checkpoint) scored in both numerics:
  Δ log-prob   = |ℓ_trainer(y) − ℓ_exact(y)|, chosen and rejected, of the checkpoint
  Δ log-ratio  = |d_trainer(y) − d_exact(y)| with d = ℓ_π − ℓ_ref (each numerics against its own reference)
  Δ margin     = |reward_margin_trainer − reward_margin_exact|
Signal: the exact |d(y_w)| and |reward margin| of the same pairs. A median Δ margin near the median
|reward margin| means much of a logged reward curve at that step is rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["pair_id", "model"]


def audit_pairs(exact: pd.DataFrame, trainer: pd.DataFrame) -> pd.DataFrame:
    """Per (pair, checkpoint) errors of the trainer numerics against the exact ones.

    exact, trainer: `losses.pair_table`s of `Workspace.pairs(run, numerics)` (aggregation "sum").
    Returns KEYS, `step`, `d_logp_chosen`, `d_logp_rejected`, `d_log_ratio_chosen`,
    `d_log_ratio_rejected`, `d_reward_margin` (absolute differences, float64) and the exact signal
    `abs_log_ratio_chosen`, `abs_reward_margin`. Pairs with no scored token in either response are
    left out (nothing to compare).
    """
    cols = ["logp_chosen", "logp_rejected", "log_ratio_chosen", "log_ratio_rejected", "reward_margin"]
    m = exact[[*KEYS, "step", "n_tokens_chosen", "n_tokens_rejected", *cols]].merge(
        trainer[[*KEYS, *cols]], on=KEYS, suffixes=("", "_t"), how="inner", validate="one_to_one")
    m = m[(m["n_tokens_chosen"] > 0) | (m["n_tokens_rejected"] > 0)]
    out = m[[*KEYS, "step"]].copy()
    for col in cols:
        out[f"d_{col}"] = (m[f"{col}_t"] - m[col]).abs()
    out["abs_log_ratio_chosen"] = m["log_ratio_chosen"].abs()
    out["abs_reward_margin"] = m["reward_margin"].abs()
    return out.reset_index(drop=True)


def audit_summary(per_pair: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint (in step order): median and 90th percentile of each error, the median
    exact signal, and `margin_error_share` = median Δ margin / median |reward margin|.

    Naive equivalent per checkpoint: `np.median(g["d_reward_margin"]) / np.median(g["abs_reward_margin"])`.
    """
    rows = []
    for model, g in per_pair.groupby("model", sort=False):
        row = {"model": model, "step": g["step"].iloc[0], "pairs": len(g)}
        logp = np.concatenate([g["d_logp_chosen"].to_numpy(), g["d_logp_rejected"].to_numpy()])
        ratio = np.concatenate([g["d_log_ratio_chosen"].to_numpy(), g["d_log_ratio_rejected"].to_numpy()])
        for name, v in (("log-prob", logp), ("log-ratio", ratio), ("reward margin", g["d_reward_margin"].to_numpy())):
            row[f"median Δ {name}"] = float(np.median(v))
            row[f"p90 Δ {name}"] = float(np.quantile(v, 0.9))
            row[f"max Δ {name}"] = float(np.max(v))
        row["median |d(y_w)|"] = float(np.median(g["abs_log_ratio_chosen"]))
        row["median |reward margin|"] = float(np.median(g["abs_reward_margin"]))
        sig = row["median |reward margin|"]
        row["margin_error_share"] = row["median Δ reward margin"] / sig if sig > 0 else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values("step", na_position="last", kind="stable").reset_index(drop=True) if len(df) else df
