"""View models: what each page draws, shaped from the `Workspace.pairs` table.

Pure pandas/numpy over tables the store returned (no I/O, no streamlit), so `data.py` can cache
each one and pages only lay them out. Paper quantities (DESIGN.md §2) come from `did_core`'s
analytics; what is here is presentation: grouping by checkpoint, quantile bands, pre-binned
histograms (so a figure carries bin counts, not 100,000 raw values), and deltas between
checkpoints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from did_core import entropy, losses

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

CURVE_QUANTITIES: dict[str, str] = {
    "logp_chosen": "log π(y_w|x)",
    "logp_rejected": "log π(y_l|x)",
    "log_ratio_chosen": "d(y_w) = log π/π_ref (chosen)",
    "log_ratio_rejected": "d(y_l) = log π/π_ref (rejected)",
    "log_margin": "log-margin M_π",
    "reward_margin": "reward margin β(M_π − M_ref)",
    "dpo_loss": "DPO loss",
    "did_entropy_chosen": "DID entropy, chosen (token mean)",
    "did_entropy_rejected": "DID entropy, rejected (token mean)",
}
"""Per-pair quantities drawn with quantile bands on Training curves."""

SHARE_QUANTITIES = {"accuracy": "preference accuracy", "displaced": "displaced share (d(y_w) < 0 and d(y_l) < 0)"}

TRAINER_KEYS: dict[str, tuple[str, ...]] = {
    # our per-pair column -> keys TRL's DPOTrainer logs in trainer_state.json (batch means)
    "logp_chosen": ("logps/chosen", "eval_logps/chosen"),
    "logp_rejected": ("logps/rejected", "eval_logps/rejected"),
    "reward_margin": ("rewards/margins", "eval_rewards/margins"),
    "dpo_loss": ("loss", "eval_loss"),
    "accuracy": ("rewards/accuracies", "eval_rewards/accuracies"),
}


def with_derived(pairs: pd.DataFrame, beta: float, aggregation: str = "sum") -> pd.DataFrame:
    """`ws.pairs` plus did_core.losses' per-pair quantities (log-ratios, accuracy, displacement),
    accuracy and displacement as 0/1 floats so their means are shares. With aggregation "mean"
    every log-prob column is per-token (did_core.losses.aggregate_logp) and the derived ones follow."""
    q = losses.pair_quantities(pairs, beta, aggregation)  # type: ignore[arg-type]
    df = pairs.copy()
    df["pair_id"] = df["pair_id"].astype(str)
    if aggregation == "mean":
        for side in ("chosen", "rejected"):
            n = df[f"n_tokens_{side}"].to_numpy()
            for col in (f"logp_{side}", f"ref_logp_{side}"):
                df[col] = losses.aggregate_logp(df[col].to_numpy(), n, "mean")
    for col in q.columns.difference(["pair_id", "model", "step"]):
        df[col] = q[col].astype(float) if q[col].dtype == bool else q[col]
    return df


def checkpoint_order(df: pd.DataFrame) -> list[str]:
    """Checkpoint names ordered by step (unknown steps last, then by name)."""
    first = df.groupby("model", sort=False)["step"].first()
    keyed = sorted(first.items(), key=lambda kv: (pd.isna(kv[1]), kv[1] if not pd.isna(kv[1]) else 0, kv[0]))
    return [name for name, _ in keyed]


def checkpoint_summary(df: pd.DataFrame, bins: int = 24) -> pd.DataFrame:
    """One row per checkpoint: step, accuracy, mean margins, loss, displaced share, mean DID
    entropy, and a histogram of reward margins (list of counts) for a sparkline column."""
    g = df.groupby("model", sort=False)
    out = pd.DataFrame({
        "step": g["step"].first(),
        "accuracy": g["accuracy"].mean(),
        "mean log-margin": g["log_margin"].mean(),
        "mean reward margin": g["reward_margin"].mean(),
        "DPO loss": g["dpo_loss"].mean(),
        "displaced share": g["displaced"].mean(),
        "mean DID entropy (chosen)": g["did_entropy_chosen"].mean(),
        "mean DID entropy (rejected)": g["did_entropy_rejected"].mean(),
    })
    lo, hi = _finite_range(df["reward_margin"].to_numpy())
    edges = np.linspace(lo, hi, bins + 1)
    out["reward margin histogram"] = [
        np.histogram(np.clip(v, lo, hi), bins=edges)[0].tolist() for v in g["reward_margin"].apply(np.asarray)
    ]
    out = out.loc[checkpoint_order(df)]
    out.index.name = "checkpoint"
    return out.reset_index()


def curves(df: pd.DataFrame, quantities: tuple[str, ...] = tuple(CURVE_QUANTITIES)) -> pd.DataFrame:
    """Long table: step, checkpoint, quantity, mean and the QUANTILES (columns q10 … q90)."""
    rows = []
    g = df.groupby("model", sort=False)
    steps = g["step"].first()
    for q in quantities:
        if q not in df or df[q].isna().all():
            continue
        stats = g[q].quantile(list(QUANTILES)).unstack()
        stats.columns = [f"q{int(round(p * 100))}" for p in QUANTILES]
        stats["mean"] = g[q].mean()
        stats["quantity"] = q
        stats["step"] = steps
        rows.append(stats)
    if not rows:
        return pd.DataFrame(columns=["checkpoint", "step", "quantity", "mean", *[f"q{int(p * 100)}" for p in QUANTILES]])
    out = pd.concat(rows)
    out.index.name = "checkpoint"
    return out.reset_index().sort_values(["quantity", "step"], kind="stable", na_position="last")


def shares(df: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: step, accuracy, displaced share."""
    g = df.groupby("model", sort=False)
    out = pd.DataFrame({"step": g["step"].first(), **{k: g[k].mean() for k in SHARE_QUANTITIES}})
    out.index.name = "checkpoint"
    return out.loc[checkpoint_order(df)].reset_index()


def trainer_log(history: list[dict] | None) -> pd.DataFrame:
    """The trainer's `log_history` as a numeric table indexed by step (one row per logged step)."""
    if not history:
        return pd.DataFrame()
    log = pd.DataFrame([h for h in history if isinstance(h, dict) and "step" in h])
    if log.empty:
        return log
    log = log.apply(pd.to_numeric, errors="coerce").dropna(axis=1, how="all")
    return log.groupby("step").last().sort_index()


def histograms(df: pd.DataFrame, column: str, bins: int = 60, by: str = "model") -> dict:
    """Shared-bin histograms of `column` per group: {"centers", "width", "counts": {group: list}}."""
    lo, hi = _finite_range(df[column].to_numpy(dtype=float))
    edges = np.linspace(lo, hi, bins + 1)
    counts = {}
    for name, values in df.groupby(by, sort=False)[column]:
        v = values.to_numpy(dtype=float)
        counts[str(name)] = np.histogram(v[np.isfinite(v)], bins=edges)[0].tolist()
    return {"centers": ((edges[:-1] + edges[1:]) / 2).tolist(), "width": float(edges[1] - edges[0]), "counts": counts}


def ordering(df: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint k: share with M_k > M_ref, and (consecutive checkpoints, DESIGN.md §2 with
    checkpoint k standing for π* and k−1 for the policy) shares with M_k > M_{k−1} and
    M_k > M_{k−1} > M_ref."""
    order = checkpoint_order(df)
    wide = df.pivot(index="pair_id", columns="model", values="log_margin")
    ref = df.drop_duplicates("pair_id").set_index("pair_id")["ref_log_margin"].reindex(wide.index)
    rows = []
    for i, name in enumerate(order):
        m = wide[name]
        row = {"checkpoint": name, "step": df.loc[df["model"] == name, "step"].iloc[0], "M_k > M_ref": float((m > ref).mean())}
        if i:
            prev = wide[order[i - 1]]
            row["M_k > M_k−1"] = float((m > prev).mean())
            row["M_k > M_k−1 > M_ref"] = float(((m > prev) & (prev > ref)).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def compare(df: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-pair deltas B − A, metric summary with A, B and Δ). The per-pair table also carries
    the DID between A and B: d_{B/A}(y) = ℓ_B − ℓ_A and its pair-set entropy."""
    cols = ["logp_chosen", "logp_rejected", "log_margin", "reward_margin", "dpo_loss", "accuracy", "displaced"]
    pa = df[df["model"] == a].set_index("pair_id")
    pb = df[df["model"] == b].set_index("pair_id").reindex(pa.index)
    deltas = pd.DataFrame({f"Δ {c}": pb[c] - pa[c] for c in cols[:5]})
    deltas.insert(0, f"log_margin {b}", pb["log_margin"])
    deltas.insert(0, f"log_margin {a}", pa["log_margin"])
    deltas["d_B/A(y_w)"] = pb["logp_chosen"] - pa["logp_chosen"]
    deltas["d_B/A(y_l)"] = pb["logp_rejected"] - pa["logp_rejected"]
    deltas["DID entropy B/A (pair)"] = entropy.pair_did_entropy(deltas["d_B/A(y_w)"].to_numpy(), deltas["d_B/A(y_l)"].to_numpy())
    deltas.index.name = "pair_id"
    summary = pd.DataFrame({a: pa[cols].mean(), b: pb[cols].mean()})
    summary["Δ (B − A)"] = summary[b] - summary[a]
    summary.index.name = "metric"
    return deltas.reset_index(), summary.reset_index()


def example_across_checkpoints(df: pd.DataFrame, pair_id: str) -> pd.DataFrame:
    """This pair's sequence log-probs, log-ratios and margins at every checkpoint (by step)."""
    rows = df[df["pair_id"] == pair_id]
    cols = ["model", "step", "logp_chosen", "logp_rejected", "log_ratio_chosen", "log_ratio_rejected",
            "log_margin", "ref_log_margin", "reward_margin", "dpo_loss", "did_entropy_chosen", "did_entropy_rejected"]
    return rows[cols].sort_values("step", kind="stable").rename(columns={"model": "checkpoint"}).reset_index(drop=True)


def trl_reference_dataset(dataset: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The dataset with TRL's `ref_chosen_logps` / `ref_rejected_logps` (DESIGN.md §3)."""
    ref = pairs.drop_duplicates("pair_id").set_index("pair_id")[["ref_logp_chosen", "ref_logp_rejected"]]
    out = dataset.copy()
    out["pair_id"] = out["pair_id"].astype(str)
    ref.index = ref.index.astype(str)
    out = out.join(ref, on="pair_id")
    return out.rename(columns={"ref_logp_chosen": "ref_chosen_logps", "ref_logp_rejected": "ref_rejected_logps"})


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)


ESTIMATORS: dict[str, dict] = {
    "token": {
        "label": "token-level, exact",
        "formula": r"H_t = -\sum_{v\in V} q_t(v)\log q_t(v),\quad q_t = \operatorname{softmax}_v\big(\log\pi(v\mid x,y_{<t})"
                   r" - \log\pi_{\mathrm{ref}}(v\mid x,y_{<t})\big),\quad \bar H = \tfrac1T\textstyle\sum_t H_t",
        "note": "Estimator 1 (ours, not the paper's): the DID over the vocabulary at each response position, exact; "
                "the mean over the response's tokens. Range [0, log |V|].",
        "chosen": "did_entropy_chosen", "rejected": "did_entropy_rejected",
    },
    "pair": {
        "label": "sequence-level, S = {y_w, y_l}",
        "formula": r"q_S(y) = \frac{\pi(y)/\pi_{\mathrm{ref}}(y)}{\sum_{y'\in S}\pi(y')/\pi_{\mathrm{ref}}(y')},\quad "
                   r"H_S = -\sum_{y\in S} q_S(y)\log q_S(y),\quad S=\{y_w,y_l\}",
        "note": "Estimator 2 with the pair itself as the candidate set (DESIGN.md §2): range [0, log 2]; "
                "log 2 when the checkpoint moved chosen and rejected equally.",
        "chosen": "did_entropy_pair", "rejected": None,
    },
}


def entropy_estimators(df: pd.DataFrame) -> dict[str, dict]:
    """The estimators this run's table has values for (token-level only when it was scored)."""
    out = {}
    for key, spec in ESTIMATORS.items():
        col = spec["chosen"]
        if key == "pair" or (col in df and df[col].notna().any()):
            out[key] = spec
    return out


def with_pair_entropy(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["did_entropy_pair"] = entropy.pair_did_entropy(out["log_ratio_chosen"].to_numpy(), out["log_ratio_rejected"].to_numpy())
    return out


def entropy_vs_displacement(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per checkpoint: mean `column` over displaced pairs and over the others."""
    if column not in df or df[column].isna().all():
        return pd.DataFrame()
    g = df.assign(group=np.where(df["displaced"] > 0, "displaced", "not displaced")).groupby(["model", "group"])[column].mean()
    out = g.unstack("group")
    out["step"] = df.groupby("model")["step"].first()
    out = out.loc[checkpoint_order(df)]
    out.index.name = "checkpoint"
    return out.reset_index()


def power_law(df: pd.DataFrame, policy: str, pi_l: str) -> dict | None:
    """Fit M_ref − M_l = β̂·(M_π − M_ref) through the origin across pairs (DESIGN.md §2);
    `pi_l` is the model standing for the rejected-response generator. None when it is absent."""
    models = set(df["model"])
    if pi_l not in models or policy not in models:
        return None
    p = df[df["model"] == policy].set_index("pair_id")
    lm = df[df["model"] == pi_l].set_index("pair_id")["log_margin"].reindex(p.index)
    x = (p["log_margin"] - p["ref_log_margin"]).to_numpy(dtype=float)
    y = (p["ref_log_margin"] - lm).to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if not len(x) or not (x @ x) > 0:
        return None
    slope = float(x @ y / (x @ x))
    resid = y - slope * x
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    rows = pd.DataFrame({"pair_id": p.index[ok], "x": x, "y": y, "residual": resid})
    return {"slope": slope, "r2": r2, "rows": rows}
