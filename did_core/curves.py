"""Training curves: per-checkpoint statistics of the scored pairs, merged with what the trainer logged.

Pure pandas, no I/O. The scored side comes from a `ws.pairs` table (one row per (pair, checkpoint));
the trainer side from `trainer_state.json`'s `log_history` (run.json `trainer_log_history`).

Long format, one row per point: `step` (float; the reference is step 0), `model` (checkpoint name,
"reference", or None for trainer rows), `metric`, `stat` ("mean", "std", "q10", "q25", ...),
`value` (float64), `source` ("scored", "trainer_train" or "trainer_eval").

Metric names are shared between the two sources where TRL 1.16 logs the same quantity
(`DPOTrainer._compute_loss` / `log`): logps/chosen → logp_chosen, logps/rejected → logp_rejected,
rewards/chosen → reward_chosen, rewards/rejected → reward_rejected, rewards/margins → reward_margin,
rewards/accuracies → accuracy, loss → loss (the trainer's own loss: its `loss_type`s and weights,
`losses.run_loss`; `dpo_loss` is always the sigmoid DPO loss); `eval_`-prefixed keys go to source
"trainer_eval". Other numeric keys keep their
names (entropy, logits/chosen, mean_token_accuracy, grad_norm, learning_rate, ...). Caveat for the
reader: the trainer's values are means over its training batches at that step (summed log-probs),
the scored values are over the user's dataset with the saved checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from did_core.losses import Aggregation, pair_quantities

QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
LONG_COLUMNS = ["step", "model", "metric", "stat", "value", "source"]
# Distributions summarised by mean, std and quantiles; then shares (mean of a bool).
DISTRIBUTION_METRICS = ("logp_chosen", "logp_rejected", "log_ratio_chosen", "log_ratio_rejected", "reward_chosen",
                        "reward_rejected", "reward_margin", "log_margin", "dpo_loss", "loss", "did_entropy_chosen",
                        "did_entropy_rejected")
SHARE_METRICS = ("accuracy", "displaced", "chosen_down", "rejected_down")
TRAINER_METRICS = {"logps/chosen": "logp_chosen", "logps/rejected": "logp_rejected",
                   "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected",
                   "rewards/margins": "reward_margin", "rewards/accuracies": "accuracy", "loss": "loss"}


def _stats(values: np.ndarray, quantiles: Sequence[float]) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {}
    out = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else float("nan")}
    out.update({f"q{round(q * 100):02d}": float(x) for q, x in zip(quantiles, np.quantile(v, quantiles))})
    return out


def _per_pair_table(pairs: pd.DataFrame, beta: float, aggregation: Aggregation) -> pd.DataFrame:
    q = pair_quantities(pairs, beta, aggregation)
    n_w, n_l = np.maximum(pairs["n_tokens_chosen"], 1), np.maximum(pairs["n_tokens_rejected"], 1)
    div_w, div_l = (n_w, n_l) if aggregation == "mean" else (1.0, 1.0)
    q["logp_chosen"] = pairs["logp_chosen"] / div_w
    q["logp_rejected"] = pairs["logp_rejected"] / div_l
    for c in ("did_entropy_chosen", "did_entropy_rejected"):
        q[c] = pairs[c].astype(float) if c in pairs else np.nan
    # The trainer's own loss (ws.pairs `loss`, from summed log-probs whatever the aggregation); a table
    # without it (older callers) falls back to the sigmoid DPO loss.
    q["loss"] = pairs["loss"].to_numpy(dtype=np.float64) if "loss" in pairs else q["dpo_loss"]
    return q


def checkpoint_curves(pairs: pd.DataFrame, beta: float, aggregation: Aggregation = "sum", *,
                      quantiles: Sequence[float] = QUANTILES, include_reference: bool = True,
                      sequence_entropy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per checkpoint: mean/std/quantiles of DISTRIBUTION_METRICS and shares of SHARE_METRICS (long format).

    pairs: `ws.pairs` table. aggregation "mean" puts every log-prob per token first (rewards and loss
    follow). The reference appears at step 0 with its own log-probs and log-margin (its log-ratios
    are 0 by definition) when `include_reference`. `sequence_entropy`: optional per-prompt sampled
    DID entropies with columns `model` and any of `restricted_entropy`, `snis_entropy` (as from
    `entropy.summarize_samples` plus a model column); their means become metrics
    `did_entropy_restricted`, `did_entropy_snis` (stat "mean").
    """
    q = _per_pair_table(pairs, beta, aggregation)
    rows: list[dict] = []
    for model, g in q.groupby("model", sort=False):
        step = float(g["step"].iloc[0]) if "step" in g and pd.notna(g["step"].iloc[0]) else float("nan")
        for metric in DISTRIBUTION_METRICS:
            for stat, v in _stats(g[metric].to_numpy(dtype=np.float64), quantiles).items():
                rows.append(dict(step=step, model=model, metric=metric, stat=stat, value=v))
        for metric in SHARE_METRICS:
            rows.append(dict(step=step, model=model, metric=metric, stat="mean", value=float(g[metric].mean())))
    if include_reference and len(pairs):
        ref = pairs.groupby("pair_id", sort=False).first()
        nw = np.maximum(ref["n_tokens_chosen"], 1) if aggregation == "mean" else 1.0
        nl = np.maximum(ref["n_tokens_rejected"], 1) if aggregation == "mean" else 1.0
        lw, ll = ref["ref_logp_chosen"] / nw, ref["ref_logp_rejected"] / nl
        for metric, vals in (("logp_chosen", lw), ("logp_rejected", ll), ("log_margin", lw - ll)):
            for stat, v in _stats(vals.to_numpy(dtype=np.float64), quantiles).items():
                rows.append(dict(step=0.0, model="reference", metric=metric, stat=stat, value=v))
    if sequence_entropy is not None and len(sequence_entropy):
        steps = q.groupby("model", sort=False)["step"].first() if "step" in q else pd.Series(dtype=float)
        for model, g in sequence_entropy.groupby("model", sort=False):
            for col, metric in (("restricted_entropy", "did_entropy_restricted"), ("snis_entropy", "did_entropy_snis")):
                if col in g:
                    rows.append(dict(step=float(steps.get(model, np.nan)), model=model, metric=metric, stat="mean",
                                     value=float(g[col].mean())))
    out = pd.DataFrame(rows, columns=LONG_COLUMNS[:-1])
    out["source"] = "scored"
    return out.sort_values(["step", "model", "metric", "stat"], kind="stable", ignore_index=True)


def trainer_curves(log_history: Sequence[dict]) -> pd.DataFrame:
    """`trainer_state.json` log_history -> long format (model None, stat "mean"), renamed per TRAINER_METRICS.

    Entries without a `step`, and non-numeric values, are skipped; `epoch` is kept as a metric.
    """
    rows = []
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            source = "trainer_eval" if key.startswith("eval_") else "trainer_train"
            name = key[len("eval_"):] if source == "trainer_eval" else key
            rows.append(dict(step=float(step), model=None, metric=TRAINER_METRICS.get(name, name), stat="mean",
                             value=float(value), source=source))
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def merged_curves(pairs: pd.DataFrame, log_history: Sequence[dict] | None, beta: float,
                  aggregation: Aggregation = "sum", **kwargs) -> pd.DataFrame:
    """`checkpoint_curves` and `trainer_curves` in one long table (kwargs go to `checkpoint_curves`)."""
    scored = checkpoint_curves(pairs, beta, aggregation, **kwargs)
    trainer = trainer_curves(log_history or [])
    parts = [p for p in (scored, trainer) if len(p)]
    if not parts:
        return pd.DataFrame(columns=LONG_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def curves_wide(long: pd.DataFrame, sep: str = ":") -> pd.DataFrame:
    """Long curves -> one row per step, one column per `source{sep}metric{sep}stat` (NaN where absent).

    Assumes one model per (step, source), as in a single run; the first value wins otherwise.
    """
    if long.empty:
        return pd.DataFrame(index=pd.Index([], name="step"))
    key = long["source"] + sep + long["metric"] + sep + long["stat"]
    wide = long.assign(column=key).pivot_table(index="step", columns="column", values="value", aggfunc="first")
    wide.columns.name = None
    return wide.sort_index()
