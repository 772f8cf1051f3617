"""`python -m did_core export`: stored results to CSV, Parquet or JSONL (docs/REFERENCE.md §7).

- `kind="pairs"`: one row per (pair, checkpoint, numerics); the contract's columns first, in order
  (docs/REFERENCE.md §7), then dropped_*, did_entropy_max_*, `accuracy` (1 when the reward margin is
  > 0, else 0), `loss` (the trainer's own loss type), `numerics` (`exact` or `trainer`) and `run`.
  did_entropy_* are empty (CSV) / null when not computed (always so in trainer numerics). The
  reference has no rows of its own: it is step 0 of every curve, and its values are the `ref_*`
  columns (e.g. `ref_logp_chosen`) of any row.
- `kind="tokens"`: one row per response token of every checkpoint (pair_id, model, step, side,
  position, token_id, token, logp, ref_logp, log_ratio, did_entropy, top1_prob, token_entropy,
  ref_top1_prob, ref_token_entropy), then `run`.
- `export_trl_reference`: the dataset with TRL's `ref_chosen_logps` / `ref_rejected_logps`.
- `export_filtered` (`--kind filtered --drop-top-ches Q`): the dataset without its top-Q% CHES pairs
  (Razin et al. 2024's mitigation), in TRL's preference format, to retrain on.

`ches`/`ches_norm` and the squeezing columns of a run scored before they were stored are empty, and
the export's metadata says so per run (`not_stored`: column → why; the CLI prints it as a `note:`).

With `run=None`, every run in the workspace is exported, one after another, told apart by the `run`
column (an error if the workspace has none). The file is written atomically. Each run's resolved
settings (value and source: trainer, default or override), its overrides and its approximation notes
go with the file: in the Parquet schema metadata (key `did_explorer`), and for CSV and JSONL in a
sidecar `FILE.meta.json`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from did_core import ches, losses
from did_core.errors import InputError
from did_core.files import atomic_write_bytes
from did_core.manifest import RunManifest
from did_core.workspace import CHES_COLUMNS, Workspace

FORMATS = (".csv", ".parquet", ".jsonl")


def _format(out: str | Path) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{out}: unknown export format {suffix or '(none)'!r}; use .csv, .parquet or .jsonl")
    return suffix


def _runs(ws: Workspace, run: str | None) -> list[str]:
    if run is not None:
        ws.run(run)  # validates the name and says clearly when it is absent
        return [run]
    names = ws.run_names()
    if not names:
        raise InputError(f"workspace {ws.root} has no scored runs to export")
    return names


def _jsonable(v: object) -> object:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and v != v:  # NaN → null
        return None
    return v


def write_table(df: pd.DataFrame, out: str | Path, metadata: dict | None = None) -> Path:
    """Write `df` to `out` by extension (.csv, .parquet, .jsonl), atomically. NaN/NA become empty/null.

    `metadata` (JSON-safe) goes into the Parquet schema metadata, or a sidecar `out.meta.json` for CSV/JSONL.
    """
    fmt = _format(out)
    out = Path(out)
    if metadata is not None and fmt != ".parquet":
        atomic_write_bytes(out.with_name(out.name + ".meta.json"),
                           json.dumps(metadata, indent=1, default=str).encode("utf-8"))
    if fmt == ".parquet":
        buf = io.BytesIO()
        table = pa.Table.from_pandas(df, preserve_index=False)
        if metadata is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   b"did_explorer": json.dumps(metadata, default=str).encode()})
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
    elif fmt == ".csv":
        data = df.to_csv(index=False, na_rep="").encode("utf-8")
    else:
        # Objects (message lists) stay JSON values; floats keep their full repr.
        lines = []
        for rec in df.to_dict(orient="records"):
            rec = {k: (None if v is pd.NA else _jsonable(v)) for k, v in rec.items()}
            lines.append(json.dumps(rec, ensure_ascii=False, default=str))
        data = ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")
    atomic_write_bytes(out, data)
    return out


def pairs_table(workspace: str | Path | Workspace, run: str | None = None,
                numerics: str | None = None) -> pd.DataFrame:
    """The export-kind pairs rows of one run (or all runs) in every numerics it has (or only `numerics`):
    `Workspace.pairs` with the derived columns of `losses.pair_table` at the run's settings (but its
    VIEW_COLUMNS), and a trailing `run` column; `accuracy` as 1/0."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    frames = []
    for name in _runs(ws, run):
        manifest = ws.run(name)
        rs = ws.run_settings(manifest).settings
        for nm in [numerics] if numerics else ws.numerics(manifest):
            table = losses.pair_table(ws.pairs(name, nm), rs).drop(columns=list(losses.VIEW_COLUMNS))
            frames.append(table.assign(run=name))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df["accuracy"] = df["accuracy"].astype("int8")
    return df


def export_metadata(workspace: str | Path | Workspace, run: str | None = None) -> dict:
    """What goes with an export, per run: resolved settings with sources, overrides, notes, numerics."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    out = {}
    for name in _runs(ws, run):
        m = ws.run(name)
        out[name] = {"run_settings": ws.run_settings(m).to_manifest(), "overrides": list(m.overrides),
                     "notes": list(m.notes), "numerics": ws.numerics(m),
                     "numerics_detail": m.numerics_detail or {"exact": {"dtype": "float32", "sums": "float64"}},
                     "not_stored": {nm: ws.not_stored(name, nm) for nm in ws.numerics(m)},
                     "tokens_not_stored": {nm: _tokens_not_stored(ws, name, m, nm) for nm in ws.numerics(m)}}
    return {"runs": out}


def _tokens_not_stored(ws: Workspace, name: str, manifest: RunManifest, numerics: str) -> dict[str, str]:
    """{column: why} for the per-token squeezing columns the tokens export leaves empty for some
    checkpoint of the run (`Workspace.tokens_not_stored`, over its checkpoints)."""
    out: dict[str, str] = {}
    for cp in manifest.checkpoints:
        if ws.score_dir(manifest.score_of(cp, numerics)).joinpath("meta.json").is_file():
            out.update(ws.tokens_not_stored(name, cp.name, numerics))
    return out


def not_stored_notes(metadata: dict, kind: str = "pairs") -> list[str]:
    """One line per (run, numerics) whose `kind` export ("pairs" or "tokens") leaves CHES or squeezing
    columns empty, and why."""
    lines = []
    key = "tokens_not_stored" if kind == "tokens" else "not_stored"
    for run, info in metadata.get("runs", {}).items():
        for nm, cols in (info.get(key) or {}).items():
            for why in dict.fromkeys(cols.values()):
                names = [c for c, w in cols.items() if w == why]
                lines.append(f"run {run} ({nm} numerics): {', '.join(names)} empty: {why}")
    return lines


def tokens_table(workspace: str | Path | Workspace, run: str | None = None,
                 numerics: str | None = None) -> pd.DataFrame:
    """Every checkpoint's token rows of one run (or all runs) in `numerics` (None: each run's primary),
    with trailing `numerics` and `run` columns."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    frames = []
    for name in _runs(ws, run):
        manifest = ws.run(name)
        nm = numerics or ws.numerics(manifest)[0]
        for cp in manifest.checkpoints:
            if ws.score_dir(manifest.score_of(cp, nm)).joinpath("meta.json").is_file():
                frames.append(ws.tokens(name, cp.name, numerics=nm).assign(numerics=nm, run=name))
    if not frames:
        raise InputError(f"workspace {ws.root} has no stored token rows to export")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def export(workspace: str | Path, out: str | Path, kind: str = "pairs", run: str | None = None,
           numerics: str | None = None) -> Path:
    """Write the `pairs` or `tokens` table of `run` (None: every run) to `out`; return the path written.

    `numerics`: only that numerics (pairs default: every numerics a run has; tokens: each run's primary).
    """
    _format(out)
    if kind == "pairs":
        df = pairs_table(workspace, run, numerics)
    elif kind == "tokens":
        df = tokens_table(workspace, run, numerics)
    else:
        raise InputError(f"unknown export kind {kind!r}; use pairs or tokens")
    return write_table(df, out, export_metadata(workspace, run))


def _one_run(ws: Workspace, run: str | None) -> str:
    if run is None:
        names = _runs(ws, None)
        if len(names) > 1:
            raise InputError(f"workspace {ws.root} has {len(names)} runs; choose one with --run ({', '.join(names)})")
        return names[0]
    return run


def filtered_table(workspace: str | Path | Workspace, run: str | None, drop_top_ches: float
                   ) -> tuple[pd.DataFrame, dict]:
    """The run's dataset without its top `drop_top_ches` percent of pairs by CHES (the reference's,
    exact numerics), and what was dropped.

    Rows keep the dataset's columns (pair_id, prompt, chosen, rejected as given: text, or message lists
    for a conversational dataset, then any extra columns): TRL's preference format. Pairs the reference
    did not score (`--limit`) are left out; pairs without a CHES (an empty response after truncation)
    cannot be ranked and are kept (`did_core.ches.drop_top_ches`). Raises InputError when the run's reference
    score holds no CHES (scored before it was stored).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    run = _one_run(ws, run)
    manifest = ws.run(run)
    missing = {c: why for c, why in ws.not_stored(run, "exact" if "exact" in ws.numerics(manifest) else None).items()
               if c in CHES_COLUMNS}
    if missing:
        raise InputError(f"run {run!r} has no CHES to filter by: {missing['ches']}")
    ref = ws.open_store(manifest.score_of(manifest.reference, "exact")).read_pairs()[["pair_id", "ches"]]
    data = ws.dataset_records(run)
    df = data.merge(ref, on="pair_id", how="inner", sort=False)
    try:
        keep = ches.drop_top_ches(pd.Series(df["ches"].to_numpy(np.float64), index=df["pair_id"]), drop_top_ches)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    kept = df[keep.to_numpy()].drop(columns=["ches"])
    dropped = df[~keep.to_numpy()]
    info = {"run": run, "drop_top_ches": drop_top_ches, "by": "ches (reference, exact numerics)",
            "n_pairs": len(df), "dropped": len(dropped), "kept": len(kept),
            "unranked_kept": int(df["ches"].isna().sum()), "not_scored_left_out": len(data) - len(df),
            "ches_threshold": float(dropped["ches"].min()) if len(dropped) else None,
            "dropped_pair_ids": dropped["pair_id"].tolist()}
    return kept.reset_index(drop=True), info


def export_filtered(workspace: str | Path, run: str | None, out: str | Path, drop_top_ches: float) -> Path:
    """Write `filtered_table` to `out` (.jsonl or .parquet; .csv only for a text dataset), with the
    filter's record (`filter`: counts, threshold, dropped pair ids) beside the run's metadata."""
    fmt = _format(out)
    ws = Workspace(workspace)
    df, info = filtered_table(ws, run, drop_top_ches)
    if fmt == ".csv" and ws.run(info["run"]).dataset.conversational:
        raise InputError(f"{out}: a conversational dataset's message lists do not fit CSV; write .jsonl or .parquet")
    return write_table(df, out, export_metadata(ws, info["run"]) | {"filter": info})


def trl_reference_table(workspace: str | Path | Workspace, run: str | None,
                        numerics: str | None = None) -> pd.DataFrame:
    """The run's dataset (prompt, chosen, rejected as given + extra columns) with TRL's reference columns.

    `ref_chosen_logps` / `ref_rejected_logps` are the reference's sequence log-probs (float64, summed
    over completion tokens, as TRL's `compute_ref_log_probs` does) in `numerics` (None: the trainer numerics
    when the run has them — what TRL's own precompute would give — else exact). Pairs the reference did
    not score are dropped. Conversational rows keep their message lists.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    if run is None:
        names = _runs(ws, None)
        if len(names) > 1:
            raise InputError(f"workspace {ws.root} has {len(names)} runs; choose one with --run ({', '.join(names)})")
        run = names[0]
    manifest = ws.run(run)
    data = ws.dataset_records(run)
    have = ws.numerics(manifest)
    nm = numerics or ("trainer" if "trainer" in have else have[0])
    ref = ws.open_store(manifest.score_of(manifest.reference, nm)).read_pairs()[
        ["pair_id", "logp_chosen", "logp_rejected"]]
    ref = ref.rename(columns={"logp_chosen": "ref_chosen_logps", "logp_rejected": "ref_rejected_logps"})
    df = data.merge(ref, on="pair_id", how="inner", sort=False)
    first = ["prompt", "chosen", "rejected", "ref_chosen_logps", "ref_rejected_logps"]
    return df[first + [c for c in df.columns if c not in first]]


def export_trl_reference(workspace: str | Path, run: str | None, out: str | Path,
                         numerics: str | None = None) -> Path:
    """Write the dataset with `ref_chosen_logps` / `ref_rejected_logps` so TRL can skip its reference model.

    TRL 1.16's DPOTrainer keeps these columns through tokenization (they are in its signature columns),
    its collator batches them, and `_compute_loss` reads them instead of running the reference when
    `DPOConfig(precompute_ref_log_probs=True)`. Caveat: TRL 1.16 still runs its own precompute pass on
    the dataset in `__init__`; to use these values, subclass `DPOTrainer` and override
    `_precompute_ref_logps(self, dataset, name, batch_size)` to return `dataset` unchanged when it
    already has both columns. CSV cannot hold message lists: they are written as JSON text there.
    """
    _format(out)
    return write_table(trl_reference_table(workspace, run, numerics), out, export_metadata(workspace, run))
