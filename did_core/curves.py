"""Training curves: per-checkpoint statistics of the scored pairs, merged with what the trainer logged.

Pure pandas, no I/O. The scored side comes from a `losses.pair_table` (one row per (pair, checkpoint));
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


def _share(values: np.ndarray) -> float:
    """The mean of 0/1 values, NaN skipped (as pandas' mean), NaN when none is left."""
    v = values[~np.isnan(values)]
    return float(v.mean()) if v.size else float("nan")


def checkpoint_curves(pairs: pd.DataFrame, *, quantiles: Sequence[float] = QUANTILES, include_reference: bool = True,
                      sequence_entropy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per checkpoint: mean/std/quantiles of DISTRIBUTION_METRICS and shares of SHARE_METRICS (long format).

    pairs: a `losses.pair_table` (its aggregation "mean" puts every log-prob, reward and margin per
    token; `loss` is the trainer's own either way); metrics it lacks (DID entropies not scored) are
    left out. The reference appears at step 0 with its own log-probs and log-margin (the table's
    ref_* columns; its log-ratios are 0 by definition) when `include_reference`. `sequence_entropy`:
    optional per-prompt sampled DID entropies with columns `model` and any of `restricted_entropy`,
    `snis_entropy` (as from `entropy.summarize_samples` plus a model column); their means become
    metrics `did_entropy_restricted`, `did_entropy_snis` (stat "mean").
    """
    rows: list[dict] = []
    # one pass over each column, cut per model (a groupby would copy every column of every group)
    codes, models = pd.factorize(pairs["model"], sort=False)
    grouped = bool(np.all(codes[1:] >= codes[:-1]))  # each model's rows together, as Workspace.pairs gives them
    order = slice(None) if grouped else np.argsort(codes, kind="stable")  # no copy when they are
    bounds = np.searchsorted(codes[order], np.arange(len(models) + 1))
    metrics = [m for m in DISTRIBUTION_METRICS if m in pairs]
    values = {m: pairs[m].to_numpy(dtype=np.float64, na_value=np.nan)[order] for m in (*metrics, *SHARE_METRICS)}
    first_steps = pairs["step"].to_numpy(dtype=np.float64, na_value=np.nan)[order] if "step" in pairs else None
    for k, model in enumerate(models):
        lo, hi = bounds[k], bounds[k + 1]
        step = float(first_steps[lo]) if first_steps is not None else float("nan")
        for metric in metrics:
            for stat, v in _stats(values[metric][lo:hi], quantiles).items():
                rows.append(dict(step=step, model=model, metric=metric, stat=stat, value=v))
        for metric in SHARE_METRICS:
            rows.append(dict(step=step, model=model, metric=metric, stat="mean", value=_share(values[metric][lo:hi])))
    if include_reference and len(pairs):
        ref = pairs[["pair_id", "ref_logp_chosen", "ref_logp_rejected", "ref_log_margin"]].groupby(
            "pair_id", sort=False).first()
        for metric, col in (("logp_chosen", "ref_logp_chosen"), ("logp_rejected", "ref_logp_rejected"),
                            ("log_margin", "ref_log_margin")):
            for stat, v in _stats(ref[col].to_numpy(dtype=np.float64), quantiles).items():
                rows.append(dict(step=0.0, model="reference", metric=metric, stat=stat, value=v))
    if sequence_entropy is not None and len(sequence_entropy):
        steps = pairs.groupby("model", sort=False)["step"].first() if "step" in pairs else pd.Series(dtype=float)
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


def merged_curves(pairs: pd.DataFrame, log_history: Sequence[dict] | None, **kwargs) -> pd.DataFrame:
    """`checkpoint_curves` of a `losses.pair_table` and `trainer_curves` in one long table (kwargs go
    to `checkpoint_curves`)."""
    scored = checkpoint_curves(pairs, **kwargs)
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
