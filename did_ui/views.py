"""View models: what each page draws, shaped from the `Workspace.pairs` table and its
`with_derived` (did_core.losses.pair_table) columns.

Pure pandas/numpy over tables the store returned (no I/O, no streamlit), so `data.py` can cache
each one and pages only lay them out. Paper quantities (docs/REFERENCE.md §1–§4) come from `did_core`'s
analytics; what is here is presentation: grouping by checkpoint, quantile bands, pre-binned
histograms (so a figure carries bin counts, not 100,000 raw values), and deltas between
checkpoints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from did_core import compare as compare_core
from did_core import curves as curves_core
from did_core import entropy, losses, paper

LAB_DEFAULTS: dict[str, object] = {
    "target_entropy": 0.3, "beta": 0.5, "n_items": 32, "steps": 200, "rejected": "did", "loss": "dpo",
    "n_pairs": 10_000, "seed": 0, "target_alignment": 0.0,
}
"""The lab page's slider defaults (also warmed at server start): sized to update well under a second."""

CURVE_QUANTITIES: dict[str, str] = {
    "logp_chosen": "log π(y_w|x)",
    "logp_rejected": "log π(y_l|x)",
    "log_ratio_chosen": "d(y_w) = log π/π_ref (chosen)",
    "log_ratio_rejected": "d(y_l) = log π/π_ref (rejected)",
    "log_margin": "log-margin M_π",
    "reward_margin": "reward margin β(M_π − M_ref)",
    "loss": "loss (the trainer's loss type)",
    "did_entropy_chosen": "DID entropy, chosen (token mean)",
    "did_entropy_rejected": "DID entropy, rejected (token mean)",
}
"""Per-pair quantities drawn with quantile bands on Training curves."""
CURVE_DEFAULTS = ("logp_chosen", "logp_rejected", "log_ratio_chosen", "log_ratio_rejected")
"""The ones Training curves shows until the user picks others: the likelihoods of the chosen and
rejected responses and their log-ratios to the reference (displacement)."""

SHARE_QUANTITIES = {"accuracy": "preference accuracy (M_π > M_ref)", "displaced": "displaced (d(y_w) < 0 and d(y_l) < 0)",
                    "chosen_down": "chosen fell (d(y_w) < 0)", "rejected_down": "rejected fell (d(y_l) < 0)"}

def with_derived(pairs: pd.DataFrame, rs, aggregation: str = "sum") -> pd.DataFrame:
    """did_core.losses.pair_table of a `ws.pairs` table under the run's settings `rs`
    (did_core.run_settings.RunSettings), with accuracy and the displacement flags as 0/1 floats so
    their means are shares. With aggregation "mean" every log-prob column is per-token and the
    derived ones follow (but `loss`, the trainer's own)."""
    df = losses.pair_table(pairs, rs, aggregation)  # type: ignore[arg-type]
    df["pair_id"] = df["pair_id"].astype(str)
    return df.astype({c: float for c in df.columns if df[c].dtype == bool})


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
        "loss": g["loss"].mean(),
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


def curves(df: pd.DataFrame, log_history: list[dict] | None) -> pd.DataFrame:
    """did_core.curves.merged_curves of a `with_derived` table: long table (step, model, metric, stat,
    value, source) of the scored checkpoints (reference at step 0) and the trainer's own logged metrics."""
    return curves_core.merged_curves(df, log_history)


def curve_frame(long: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scored stats by step: one column per stat, trainer values: step × source) for one metric."""
    m = long[long["metric"] == metric]

    def wide(rows: pd.DataFrame, column: str) -> pd.DataFrame:  # unstack: ~3x faster than pivot_table here
        rows = rows.drop_duplicates(["step", column])
        return rows.set_index(["step", column])["value"].unstack(column).sort_index()

    return wide(m[m["source"] == "scored"], "stat"), wide(m[m["source"] != "scored"], "source")


HISTOGRAM_BINS = (10, 40)
"""The fewest and most bins `histograms` picks by itself."""


def histogram_bins(n: int) -> int:
    """Bins for a histogram of `n` values: the Rice rule 2·n^(1/3), within HISTOGRAM_BINS.

    A fixed 60 left ~8 pairs per bin on a 500-pair run, so each checkpoint's outline was mostly
    noise; the Rice rule grows the bin count with the sample (500 pairs: 16 bins, 8,000: 40).
    """
    lo, hi = HISTOGRAM_BINS
    return int(min(hi, max(lo, round(2 * max(n, 1) ** (1 / 3)))))


def histograms(df: pd.DataFrame, column: str, bins: int | None = None, by: str = "model") -> dict:
    """Shared-bin histograms of `column` per group: {"centers", "width", "counts": {group: list}}.
    `bins=None`: `histogram_bins` of the largest group's count of finite values."""
    values = df[column].to_numpy(dtype=float)
    if bins is None:
        finite = df.assign(_finite=np.isfinite(values)).groupby(by, sort=False)["_finite"].sum()
        bins = histogram_bins(int(finite.max()) if len(finite) else 0)
    lo, hi = _finite_range(values)
    edges = np.linspace(lo, hi, bins + 1)
    counts = {}
    for name, values in df.groupby(by, sort=False)[column]:
        v = values.to_numpy(dtype=float)
        counts[str(name)] = np.histogram(v[np.isfinite(v)], bins=edges)[0].tolist()
    return {"centers": ((edges[:-1] + edges[1:]) / 2).tolist(), "width": float(edges[1] - edges[0]), "counts": counts}


def ordering(raw: pd.DataFrame, aggregation: str = "sum") -> pd.DataFrame:
    """Per checkpoint along the path reference → c1 → c2 …: share with M_k > M_ref, and
    did_core.paper's consecutive ordering shares (M_k > M_{k−1}; M_k > M_{k−1} > M_{k−2}; monotone)."""
    wide = paper.margins_wide(raw, aggregation)  # type: ignore[arg-type]
    shares = paper.ordering_shares(wide)
    above = {m: float((wide[m] > wide[compare_core.REFERENCE]).mean()) for m in wide.columns[1:]}
    shares.insert(1, "M_k > M_ref", shares["model"].map(above))
    return shares.rename(columns={"model": "checkpoint", "prev_model": "previous", "increased": "M_k > M_k−1",
                                  "ordered": "M_k > M_k−1 > M_k−2", "monotone": "monotone so far"})


ORDERING_SHARES = {"M_k > M_ref": "M_k > M_ref (accuracy)", "M_k > M_k−1": "M_k > M_k−1 (increased)",
                   "M_k > M_k−1 > M_k−2": "M_k > M_k−1 > M_k−2 (ordered)", "monotone so far": "monotone so far"}
"""The ordering shares of `ordering`, as Log-margins' overlay of several runs draws them."""


def step_frame(frame: pd.DataFrame, column: str, steps: pd.Series) -> pd.DataFrame:
    """One value per checkpoint as the frame `figures.run_overlay` draws: index step (float, sorted),
    column "mean" = `frame[column]`; `steps` gives each row's step. Rows without a step or a value
    (an ordering share undefined at the first checkpoint) are left out."""
    out = pd.DataFrame({"mean": pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)},
                       index=pd.Index(pd.to_numeric(steps, errors="coerce").to_numpy(dtype=float), name="step"))
    return out[np.isfinite(out.index.to_numpy()) & out["mean"].notna().to_numpy()].sort_index()


def compare_baselines(checkpoints: list[str]) -> list[str]:
    """What Compare offers as A: the reference, then the run's checkpoints (B is always a checkpoint)."""
    return [compare_core.REFERENCE, *[c for c in checkpoints if c != compare_core.REFERENCE]]


def default_baseline(checkpoints: list[str]) -> str:
    """Compare's A until the user picks one: the first checkpoint (B defaults to the last), or the
    reference when the run has a single checkpoint, so the first view is never A = B."""
    return checkpoints[0] if len(checkpoints) > 1 else compare_core.REFERENCE


def compare(df: pd.DataFrame, a: str, b: str, rs) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(per-pair table from did_core.compare, metric means of A and B with Δ, summary incl. the
    DID q_{B/A} entropy and its bootstrap interval). `df`: the run's `with_derived` table (sums);
    `rs`: its RunSettings. A (or B) may be "reference". `loss` is the trainer's own loss, `dpo_loss`
    always the sigmoid DPO loss."""
    table = compare_core.compare_checkpoints(df, a, b, rs)
    return _comparison(table, _model_rows(df, a, rs), _model_rows(df, b, rs), a, b)


def compare_runs(a: dict, b: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """`compare` across two runs that share the dataset and the reference score. Each side is
    {"df": its run's `with_derived` table, "model": a checkpoint or "reference", "rs": the run's
    RunSettings, "label": how the summary names it}; each side's rewards and losses are at its own
    run's β and loss type (did_core.compare.compare_runs)."""
    table = compare_core.compare_runs(a["df"], a["model"], a["rs"], b["df"], b["model"], b["rs"])
    return _comparison(table, _model_rows(a["df"], a["model"], a["rs"]),
                       _model_rows(b["df"], b["model"], b["rs"]), a["label"], b["label"])


def run_label(run: str, model: str) -> str:
    """How Compare names a side taken from another run than B's: "run · checkpoint"."""
    return f"{run} · {model}"


def _model_rows(df: pd.DataFrame, model: str, rs) -> pd.DataFrame:
    """A `with_derived` table's rows of `model`; the reference's (did_core.compare.reference_rows) derived anew."""
    if model == compare_core.REFERENCE:
        return with_derived(compare_core.reference_rows(df), rs)
    return df[df["model"] == model]


def _comparison(table: pd.DataFrame, pa: pd.DataFrame, pb: pd.DataFrame, a: str, b: str
                ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    table.index.name = "pair_id"
    cols = ["accuracy", "log_margin", "loss", "dpo_loss", "displaced", "logp_chosen", "logp_rejected", "reward_margin"]
    summary = pd.DataFrame({"A": pa[cols].mean(), "B": pb[cols].mean()})
    summary["Δ (B − A)"] = summary["B"] - summary["A"]
    summary = summary.rename(columns={"A": f"A: {a}", "B": f"B: {b}"})
    summary.index.name = "metric"
    # 400 resamples: a 95 % percentile interval to about ±0.002 nats here, at a fifth of the default cost;
    # above did_core.compare.BOOTSTRAP_MAX_N pairs the normal interval (stats["did_entropy_ci_method"]).
    stats = compare_core.summarize_comparison(table, n_boot=400).as_dict() if len(table) else {}
    return table.reset_index(), summary.reset_index(), stats


def example_across_checkpoints(df: pd.DataFrame, pair_id: str) -> pd.DataFrame:
    """This pair's sequence log-probs, log-ratios and margins at every checkpoint (by step)."""
    rows = df[df["pair_id"] == pair_id]
    cols = ["model", "step", "logp_chosen", "logp_rejected", "log_ratio_chosen", "log_ratio_rejected",
            "log_margin", "ref_log_margin", "reward_margin", "dpo_loss", "did_entropy_chosen", "did_entropy_rejected"]
    return rows[cols].sort_values("step", kind="stable").rename(columns={"model": "checkpoint"}).reset_index(drop=True)


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
        "note": "Estimator 2 with the pair itself as the candidate set (docs/REFERENCE.md §3): range [0, log 2]; "
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
    """`df` with its pair's DID entropy as one more column (a new frame sharing `df`'s columns: `df` is
    left as it was, and no column is copied)."""
    return df.assign(did_entropy_pair=entropy.pair_did_entropy(df["log_ratio_chosen"].to_numpy(),
                                                               df["log_ratio_rejected"].to_numpy()))


def pair_entropy_by_step(df: pd.DataFrame) -> pd.DataFrame:
    """Mean DID entropy over {y_w, y_l} per checkpoint of a `with_pair_entropy` table, as `step_frame`s it."""
    by = df.groupby("model", sort=False).agg(step=("step", "first"), did_entropy_pair=("did_entropy_pair", "mean"))
    return step_frame(by, "did_entropy_pair", by["step"])


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


def power_law(raw: pd.DataFrame, policy: str, pi_l: str, beta: float | None, aggregation: str = "sum") -> dict:
    """did_core.paper.paper_conditions: M_ref − M_l = β̂·(M_π − M_ref) through the origin, with
    `pi_l` (a model of this run) standing for the rejected-response generator."""
    fit, table = paper.paper_conditions(raw, policy, pi_l, aggregation=aggregation, trainer_beta=beta)  # type: ignore[arg-type]
    return {"fit": fit.as_dict(), "rows": table.reset_index()}


def power_law_reading(fit: dict) -> str:
    """One sentence reading the power-law fit's slope β̂ (`power_law(...)["fit"]`) against the paper.

    The paper's condition (docs/REFERENCE.md §4): preferences encode the DID from π_ref to π* when
    π_l ∝ π_ref^{1+β} π*^{−β}, and then M_ref − M_l = β·(M_π − M_ref) exactly: a line through the
    origin whose slope is the trainer's β, so every pair that π* prefers more than π_ref is ordered
    M_π > M_ref > M_l. A slope within two standard errors of β reads as agreement; a negative one
    means π_l moved margins the same way as π (what an earlier checkpoint of the run does).
    """
    b, se, r2 = fit.get("beta_hat"), fit.get("slope_stderr"), fit.get("r2")
    beta, ordered = fit.get("trainer_beta"), fit.get("ordered_share")

    def finite(x: object) -> bool:
        return isinstance(x, int | float) and bool(np.isfinite(x))

    if not finite(b):
        return ("No slope: M_π − M_ref is 0 on every pair used (or too few pairs), so the line through the "
                "origin is undefined.")
    want = f"the trainer's β = {beta:g}" if finite(beta) else "the trainer's β, which this run does not record"
    share = f"{ordered:.0%} of pairs are ordered M_π > M_ref > M_l" if finite(ordered) else ""
    scatter = f", though with R² = {r2:.2f} the pairs lie far from any line" if finite(r2) and r2 < 0.3 else ""
    if b <= 0:
        return (f"β̂ = {b:.3g} is {'negative' if b < 0 else 'zero'}, against the paper's prediction of a positive slope "
                f"equal to {want}: where π raised a pair's margin above M_ref, π_l raised it too (as an earlier "
                f"checkpoint of the same run does), so π_l does not act as the rejected-response generator the "
                f"condition needs{' (' + share + ')' if share else ''}.")
    tail = f"{scatter}{'; ' + share if share else ''}."
    if not (finite(beta) and beta > 0):
        return f"β̂ = {b:.3g} is positive, as the paper predicts; it also predicts β̂ equal to {want}{tail}"
    if finite(se) and abs(b - beta) <= 2 * se:
        return f"β̂ = {b:.3g} is positive and within two standard errors of {want}, as the paper predicts{tail}"
    return (f"β̂ = {b:.3g} is positive, as the paper predicts, but {b / beta:.2g}× {want} (the paper predicts "
            f"the two equal){tail}")


SEQUENCE_ESTIMATORS = {
    "exact_did_entropy": "exact, over the language's responses",
    "exact_did_entropy_support": "exact, over the sampler's whole support (what SNIS estimates)",
    "snis_entropy": "K samples, self-normalised IS",
    "restricted_entropy": "K samples, H over the sample set",
    "target_did_entropy": "target q*",
}


def sequence_entropy_by_step(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """Mean over prompts, per checkpoint, of each sequence-level estimate (and of its interval bounds and
    ESS); `{e}_reliable` becomes the share of prompts whose ESS ≥ entropy.RELIABLE_ESS."""
    if per_prompt.empty:
        return per_prompt
    cols = [c for c in per_prompt.columns
            if c.endswith(("_entropy", "_ci_low", "_ci_high", "_ess", "_reliable"))
            or c in ("k", "exact_did_entropy_support")]
    per_prompt = per_prompt.astype({c: float for c in cols if c.endswith("_reliable")})
    out = per_prompt.groupby("model", sort=False)[cols].mean()
    out.insert(0, "step", per_prompt.groupby("model", sort=False)["step"].first())
    out.index.name = "checkpoint"
    return out.sort_values("step").reset_index()
