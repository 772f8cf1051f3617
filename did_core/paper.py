"""The paper's conditions on the user's data: log-margin ordering and the power-law line (pure numpy/pandas).

docs/REFERENCE.md §4: preferences encode the DID that leads from π_ref to π* when
q_{π_ref/π_l}(y) ∝ q_{π*/π_ref}(y)^β on y ∈ {y_w, y_l}, i.e. in log-margins

    M_ref − M_l = β · (M_* − M_ref)          (a line through the origin)

with M_m = ℓ_m(y_w) − ℓ_m(y_l). A checkpoint stands in for π*, an optional model of the
rejected-response generator for π_l. With β > 0 the line implies the ordering M_* > M_ref > M_l
whenever M_* > M_ref. Without a π_l model, the same ordering is tested between consecutive
checkpoints (`consecutive_ordering`).

Arrays are (N,) over pairs. R² of the no-intercept fit: `r2` is the *uncentered* R² = 1 − RSS/Σy²,
the usual definition for regression through the origin (R's `lm(y ~ 0 + x)`, statsmodels without
a constant); `r2_centered` = 1 − RSS/Σ(y − ȳ)² is given too and can be negative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from did_core.losses import Aggregation, aggregate_logp, log_margin

REFERENCE = "reference"


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def log_margin_ordering(m_policy, m_ref, m_l) -> pd.DataFrame:
    """Per-pair flags: `policy_above_ref` (M_π > M_ref), `ref_above_l` (M_ref > M_l), `ordered` (both).

    (N,) ×3 -> DataFrame of N bool rows. The share of `ordered` is the paper's "log-margin ordered".
    """
    mp, mr, ml = _f64(m_policy), _f64(m_ref), _f64(m_l)
    return pd.DataFrame({"policy_above_ref": mp > mr, "ref_above_l": mr > ml, "ordered": (mp > mr) & (mr > ml)})


@dataclass(frozen=True)
class PowerLawFit:
    """Least-squares line through the origin of y = M_ref − M_l on x = M_π − M_ref."""

    beta_hat: float          # Σxy / Σx² (NaN when Σx² = 0)
    r2: float                # uncentered: 1 − RSS/Σy²
    r2_centered: float       # 1 − RSS/Σ(y − ȳ)²
    slope_stderr: float      # sqrt(RSS/(n−1) / Σx²)
    n: int                   # pairs used (finite x and y)
    ordered_share: float     # share of pairs with M_π > M_ref > M_l
    trainer_beta: float | None  # the trainer's β, shown beside β̂ when known

    def as_dict(self) -> dict:
        return asdict(self)


def fit_power_law(m_policy, m_ref, m_l, *, trainer_beta: float | None = None) -> tuple[PowerLawFit, pd.DataFrame]:
    """Fit M_ref − M_l = β·(M_π − M_ref) through the origin.

    (N,) ×3 -> (PowerLawFit, per-pair DataFrame with `x`, `y`, `fitted`, `residual` and the ordering
    flags, N rows in input order; pairs with a non-finite x or y get NaN fitted/residual and are left
    out of the fit).
    """
    mp, mr, ml = _f64(m_policy), _f64(m_ref), _f64(m_l)
    x, y = mp - mr, mr - ml
    ok = np.isfinite(x) & np.isfinite(y)
    xo, yo = x[ok], y[ok]
    sxx = float(np.sum(xo * xo))
    beta_hat = float(np.sum(xo * yo) / sxx) if sxx > 0 else float("nan")
    rss = float(np.sum((yo - beta_hat * xo) ** 2))
    syy = float(np.sum(yo * yo))
    syy_c = float(np.sum((yo - yo.mean()) ** 2)) if yo.size else 0.0
    n = int(ok.sum())
    flags = log_margin_ordering(mp, mr, ml)
    fit = PowerLawFit(
        beta_hat=beta_hat,
        r2=1.0 - rss / syy if syy > 0 else float("nan"),
        r2_centered=1.0 - rss / syy_c if syy_c > 0 else float("nan"),
        slope_stderr=float(np.sqrt(rss / (n - 1) / sxx)) if n > 1 and sxx > 0 else float("nan"),
        n=n, ordered_share=float(flags["ordered"].mean()) if len(flags) else float("nan"),
        trainer_beta=trainer_beta)
    fitted = np.where(ok, beta_hat * x, np.nan)
    table = pd.DataFrame({"x": x, "y": y, "fitted": fitted, "residual": np.where(ok, y - fitted, np.nan)})
    return fit, pd.concat([table, flags], axis=1)


def margins_wide(pairs: pd.DataFrame, aggregation: Aggregation = "sum") -> pd.DataFrame:
    """Log-margins per pair and model from a `ws.pairs` table: index `pair_id`, one column per model.

    The first column is "reference" (from the `ref_*` columns), then the models ordered by `step`
    (unknown steps last, then by name); pairs in the order of their first row. aggregation "mean" uses
    per-token-mean log-probs. Pairs and models with no finite margin at all are left out, as
    `pivot_table` would; built on factorized codes instead (60k pairs × 20 checkpoints: 1.1 → 0.13 s).
    """
    nw, nl = pairs["n_tokens_chosen"], pairs["n_tokens_rejected"]
    m, mref = (log_margin(aggregate_logp(pairs[f"{x}logp_chosen"], nw, aggregation),
                          aggregate_logp(pairs[f"{x}logp_rejected"], nl, aggregation)) for x in ("", "ref_"))
    pcodes, pids = pd.factorize(pairs["pair_id"], sort=False)
    mcodes, models = pd.factorize(pairs["model"], sort=False)
    steps = pairs.groupby(mcodes, sort=False)["step"].first() if "step" in pairs else pd.Series(dtype=float)

    def path_key(k: int) -> tuple[bool, float, str]:
        s = steps.get(k)
        return (True, 0.0, str(models[k])) if s is None or pd.isna(s) else (False, float(s), str(models[k]))

    grid = np.full((len(pids), len(models)), np.nan)
    grid[pcodes, mcodes] = m
    wide = pd.DataFrame(grid, index=pd.Index(pids, name="pair_id"), columns=list(models))
    wide = wide.iloc[:, sorted(range(len(models)), key=path_key)].dropna(how="all").dropna(how="all", axis=1)
    ref = pd.Series(mref, copy=False).groupby(pcodes, sort=False).first()  # the same on a pair's rows
    wide.insert(0, REFERENCE, ref.set_axis(pids[ref.index]).reindex(wide.index).to_numpy())
    wide.columns.name = None
    return wide


def paper_conditions(pairs: pd.DataFrame, policy: str, rejected_model: str | None = None, *,
                     aggregation: Aggregation = "sum", trainer_beta: float | None = None
                     ) -> tuple[PowerLawFit, pd.DataFrame]:
    """`fit_power_law` on a `ws.pairs` table: `policy` stands for π*, `rejected_model` (a model scored in
    the same run) for π_l. Without `rejected_model` the fit is undefined: use `consecutive_ordering`.
    Returns the fit and the per-pair table indexed by `pair_id`.
    """
    if rejected_model is None:
        raise ValueError("the power-law fit needs a model of the rejected-response generator (π_l)")
    wide = margins_wide(pairs, aggregation)
    for m in (policy, rejected_model):
        if m not in wide.columns:
            raise ValueError(f"model {m!r} is not in the pairs table (have {list(wide.columns)})")
    fit, table = fit_power_law(wide[policy], wide[REFERENCE], wide[rejected_model], trainer_beta=trainer_beta)
    table.index = wide.index
    return fit, table


def consecutive_ordering(wide: pd.DataFrame) -> pd.DataFrame:
    """Ordering tests along the path reference → checkpoint 1 → checkpoint 2 → … (no π_l needed).

    `wide`: `margins_wide` output (columns in path order). Long result, one row per (pair, checkpoint
    k ≥ 1): `pair_id, model, prev_model, log_margin, prev_log_margin, increased` (M_k > M_{k−1}) and
    `ordered` (M_k > M_{k−1} > M_{k−2}: the paper's ordering with c_k as π, c_{k−1} as π_ref and
    c_{k−2} as π_l; pandas NA for k = 1), plus `monotone` (M strictly increasing along the whole
    path up to k).
    """
    cols, m, inc, mono = _path_tests(wide)
    frames = []
    for k in range(1, len(cols)):
        ordered = pd.array(inc[:, k - 1] & inc[:, k - 2], dtype="boolean") if k >= 2 else \
            pd.array([pd.NA] * len(m), dtype="boolean")
        frames.append(pd.DataFrame({
            "pair_id": wide.index.to_numpy(), "model": cols[k], "prev_model": cols[k - 1], "log_margin": m[:, k],
            "prev_log_margin": m[:, k - 1], "increased": inc[:, k - 1], "ordered": ordered,
            "monotone": mono[:, k - 1]}))
    if not frames:
        return pd.DataFrame(columns=["pair_id", "model", "prev_model", "log_margin", "prev_log_margin",
                                     "increased", "ordered", "monotone"])
    return pd.concat(frames, ignore_index=True)


def _path_tests(wide: pd.DataFrame) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """The path's columns, the (N, C) margins, M_k > M_{k−1} (N, C−1) and its running AND (monotone)."""
    cols = list(wide.columns)
    m = wide.to_numpy(dtype=np.float64)
    inc = m[:, 1:] > m[:, :-1]
    return cols, m, inc, np.logical_and.accumulate(inc, axis=1)


def ordering_shares(wide: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint k ≥ 1 of `margins_wide`'s path: the shares of `consecutive_ordering`'s
    `increased`, `ordered` (NaN for k = 1, where it is NA) and `monotone` over the pairs, and `n`,
    the number of pairs; from the margins matrix, without the long table (60k pairs × 20 checkpoints:
    ~0.2 s less on Log-margins' cold open)."""
    cols, m, inc, mono = _path_tests(wide)
    rows = [{"model": cols[k], "prev_model": cols[k - 1], "increased": float(inc[:, k - 1].mean()) if len(m) else np.nan,
             "ordered": float((inc[:, k - 1] & inc[:, k - 2]).mean()) if k >= 2 and len(m) else np.nan,
             "monotone": float(mono[:, k - 1].mean()) if len(m) else np.nan, "n": len(m)}
            for k in range(1, len(cols))]
    return pd.DataFrame(rows, columns=["model", "prev_model", "increased", "ordered", "monotone", "n"])
