"""The workspace: where datasets, scores and runs are stored, and the readers everything else calls.

    <workspace>/datasets/<dataset_fp>.parquet   normalized pairs (message lists as JSON text)
    <workspace>/scores/<score_fp>/...           one `ScoreStore` per scored model (see store.py)
    <workspace>/runs/<run_name>/run.json        a scored run: reference + checkpoints + β

Writers are atomic (temp file + `os.replace`). Readers never write. Every name that may come from a
URL or the command line (run names, fingerprints) is validated to resolve inside the workspace.

The readers return stored numbers only (`pairs` joins each checkpoint's to the reference's;
`losses.pair_table` derives rewards, margins and losses from them).

Why one module of ~490 lines: it is the one reader and writer of the layout above; its readers
join stored numbers to the reference and to the dataset, and say which stored columns an old store
lacks, all of which need the same paths and checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from did_core import losses
from did_core.config import default_workspace
from did_core.data import display_text
from did_core.errors import InputError
from did_core.files import atomic_write_bytes
from did_core.fingerprints import fingerprint, model_fingerprint
from did_core.manifest import ModelEntry, RunManifest
from did_core.pair_join import JoinReference, frame, joined_columns, stored_column, str_array
from did_core.store import (
    CorruptStoreError,
    ScoreStore,
    atomic_write_json,
    held_columns,
    remove_orphaned_temps,
    table_to_parquet_bytes,
)

__all__ = ["Workspace", "RunManifest", "ScoreStore", "CorruptStoreError", "fingerprint", "default_workspace",
           "validate_name", "STORED_PAIRS_COLUMNS", "TOKENS_COLUMNS", "CHES_COLUMNS", "SQUEEZING_COLUMNS",
           "TOKEN_SQUEEZING_COLUMNS"]

CHES_COLUMNS = ("ches", "ches_norm")
"""The reference's, from its exact-numerics store (the same on every row of a pair)."""
SQUEEZING_COLUMNS = ("top1_prob_chosen", "top1_prob_rejected", "token_entropy_chosen", "token_entropy_rejected")
"""The row's model's, in the row's numerics (exact only: the trainer numerics compute none)."""
STORED_NUMBERS = ("n_tokens_chosen", "n_tokens_rejected", "did_entropy_chosen", "did_entropy_rejected",
                  "dropped_chosen", "dropped_rejected", "did_entropy_max_chosen", "did_entropy_max_rejected")
"""The per-pair numbers every score store holds besides the log-probs."""
STORED_PAIRS_COLUMNS = ["pair_id", "model", "step", "logp_chosen", "logp_rejected", "ref_logp_chosen",
                        "ref_logp_rejected", *STORED_NUMBERS, *CHES_COLUMNS, *SQUEEZING_COLUMNS,
                        *(f"ref_{c}" for c in SQUEEZING_COLUMNS), "numerics"]
"""`Workspace.pairs`' columns: stored numbers only, each checkpoint's joined to the reference's."""
RESCORE_HINT = ("scored before CHES and squeezing were stored: score the run again (`python -m did_core score`, "
                "or the Score page) to compute them; its stores get new fingerprints, the old ones stay")
TOKEN_SQUEEZING = ("top1_prob", "token_entropy")
"""The per-token squeezing values a store holds for its own model."""
TOKEN_SQUEEZING_COLUMNS = (*TOKEN_SQUEEZING, *(f"ref_{c}" for c in TOKEN_SQUEEZING))
"""The model's and the reference's top-1 probability and next-token entropy at each position (exact
numerics only; `tokens_not_stored` says when they are empty)."""
TOKENS_COLUMNS = ["pair_id", "model", "step", "side", "position", "token_id", "token", "logp", "ref_logp",
                  "log_ratio", "did_entropy", *TOKEN_SQUEEZING_COLUMNS]
RESCORE_TOKENS_HINT = ("scored before per-token squeezing was stored: score the run again (`python -m did_core "
                       "score`, or the Score page) to compute it; its stores get new fingerprints, the old ones stay")
_META_KEY = b"did_explorer"
_DATASET_ROW_GROUP = 1024
"""Rows a row group of a stored dataset: `dataset_table(fp, pair_ids)` decodes only the groups holding
those pairs (a file written before this, one group, is read whole: the same rows)."""
_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f/\\:*?\"<>|]{1,200}$")
_FP_RE = re.compile(r"^[0-9a-f]{8,64}$")


class PreferenceDataLike(Protocol):
    """What `write_dataset` needs (data.PreferenceData satisfies it)."""

    pairs: pd.DataFrame
    conversational: bool
    source: str
    fingerprint: str


def validate_name(name: Any, what: str = "run name") -> str:
    """Return `name` if it is a plain single path component; else raise InputError.

    Rejects empty names, '.', '..', leading dots, path separators, control and shell-special characters.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith(".") or name != name.strip():
        raise InputError(f"invalid {what} {name!r}: use letters, digits, '-', '_' (no path separators or '..')")
    return name


def _to_text(value: Any) -> Any:
    """Message lists and other non-scalar values as JSON text, for storage."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return json.dumps(value, ensure_ascii=False, default=str)


def _display(value: Any) -> str:
    """A stored prompt/response as plain text (message lists rendered by data.display_text when available)."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return display_text(value)


class Workspace:
    """One workspace directory. Cheap to construct; creates directories only when writing."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = self.check_root(root if root is not None else default_workspace())

    validate_name = staticmethod(validate_name)

    @staticmethod
    def check_root(root: str | Path) -> Path:
        """`root` as a Path, if it is (or can become) a folder; else InputError.

        An existing file, or a path below one, would end in NotADirectoryError at the first write,
        after the models were loaded and the pairs scored. One stat per ancestor up to the first
        that exists; nothing is created.
        """
        root = Path(root)
        for path in (root, *root.parents):
            if path.exists():
                if not path.is_dir():
                    where = "is a file" if path == root else f"is below the file {path}"
                    raise InputError(f"workspace {root} {where}, not a folder; choose a folder with --workspace")
                break
        return root

    # -- paths ------------------------------------------------------------------------------------------
    def _inside(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise InputError(f"{'/'.join(parts)!r} resolves outside the workspace {self.root}")
        return path

    def run_dir(self, name: str) -> Path:
        return self._inside("runs", validate_name(name))

    def score_dir(self, score_fp: str) -> Path:
        if not isinstance(score_fp, str) or not _FP_RE.match(score_fp):
            raise InputError(f"invalid score fingerprint {score_fp!r}")
        return self._inside("scores", score_fp)

    def dataset_path(self, dataset_fp: str) -> Path:
        if not isinstance(dataset_fp, str) or not _FP_RE.match(dataset_fp):
            raise InputError(f"invalid dataset fingerprint {dataset_fp!r}")
        return self._inside("datasets", f"{dataset_fp}.parquet")

    # -- writers ----------------------------------------------------------------------------------------
    def remove_orphaned_temps(self) -> list[Path]:
        """Remove the temp files that writers killed mid-write left anywhere in the workspace's stores
        (datasets/, samples/, runs/*/, scores/*/); those of live processes stay. A job calls this first."""
        dirs = [self.root / "datasets", self.root / "samples"]
        for sub in ("runs", "scores"):
            dirs += [d for d in (self.root / sub).glob("*") if d.is_dir()] if (self.root / sub).is_dir() else []
        return [p for d in dirs for p in remove_orphaned_temps(d)]

    def write_dataset(self, data: PreferenceDataLike) -> str:
        """Store the normalized pairs once under datasets/<fingerprint>.parquet; return the fingerprint."""
        path = self.dataset_path(data.fingerprint)
        if path.is_file():
            return data.fingerprint
        df = data.pairs.copy()
        df["pair_id"] = df["pair_id"].astype(str)
        columns = {}
        for col in df.columns:
            values = [_to_text(v) for v in df[col].tolist()]
            try:
                columns[str(col)] = pa.array(values, from_pandas=True)
            except (pa.ArrowException, TypeError):
                columns[str(col)] = pa.array([None if v is None else str(v) for v in values], pa.string())
        table = pa.table(columns)
        info = {"source": data.source, "conversational": bool(data.conversational),
                "fingerprint": data.fingerprint, "n_pairs": len(df)}
        table = table.replace_schema_metadata({_META_KEY: json.dumps(info).encode()})
        atomic_write_bytes(path, table_to_parquet_bytes(table, row_group_size=_DATASET_ROW_GROUP))
        return data.fingerprint

    def score_store(self, score_fp: str, meta: dict) -> ScoreStore:
        """The store for `score_fp`, creating scores/<fp>/meta.json from `meta` if new."""
        store = ScoreStore(self.score_dir(score_fp))
        store.init_meta(meta)
        return store

    def open_store(self, score_fp: str) -> ScoreStore:
        """An existing store (reading only; raises InputError when absent)."""
        store = ScoreStore(self.score_dir(score_fp))
        if not store.exists():
            raise InputError(f"no stored score {score_fp} in workspace {self.root}")
        return store

    def write_run(self, manifest: RunManifest) -> None:
        """Write runs/<manifest.name>/run.json (`manifest.to_json()`) atomically, replacing an older one."""
        if not isinstance(manifest, RunManifest):
            raise TypeError(f"write_run takes a RunManifest, not {type(manifest).__name__}")
        atomic_write_json(self.run_dir(manifest.name) / "run.json", manifest.to_json())

    # -- readers ----------------------------------------------------------------------------------------
    def run_names(self) -> list[str]:
        """Names of the runs with a run.json, sorted."""
        runs = self.root / "runs"
        if not runs.is_dir():
            return []
        return sorted(p.name for p in runs.iterdir() if (p / "run.json").is_file() and not p.name.startswith("."))

    def run(self, name: str) -> RunManifest:
        """The run's manifest (runs/<name>/run.json); InputError when it is absent, unreadable or lacks a
        field readers need. `stale_models` says which of its models changed since they were scored."""
        path = self.run_dir(name) / "run.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"no run {name!r} in workspace {self.root}") from None
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable run manifest ({e})") from None
        return RunManifest.from_json(d, where=str(path))

    def stale_models(self, manifest: RunManifest) -> dict[str, str]:
        """Models whose files changed ("changed") or vanished ("missing") since they were scored.

        Compares the `model_fingerprint` in each score's meta.json with `fingerprints.model_fingerprint` of
        the path now. Hub ids (not local paths) are not checked.
        """
        stale: dict[str, str] = {}
        for entry in manifest.models:
            path = entry.path
            try:
                stored = self.open_store(entry.score).meta().get("model_fingerprint")
            except (InputError, CorruptStoreError):
                continue
            if not stored:
                continue
            if not Path(path).exists():
                if os.path.isabs(path) or path.startswith(".") or path.endswith(".gguf"):
                    stale[entry.name] = "missing"
                continue
            try:
                if model_fingerprint(path) != stored:
                    stale[entry.name] = "changed"
            except InputError:
                stale[entry.name] = "missing"
        return stale

    @staticmethod
    def numerics(manifest: RunManifest) -> list[str]:
        """The numerics a run was scored in, the primary (shown by default) first; runs scored before
        there were two are "exact"."""
        return list(manifest.numerics)

    @staticmethod
    def score_of(manifest: RunManifest, entry: ModelEntry, numerics: str | None = None) -> str:
        """The score fingerprint of a reference or checkpoint entry in `numerics` (None: the primary)."""
        return manifest.score_of(entry, numerics)

    @staticmethod
    def run_settings(manifest: RunManifest):
        """The run's resolved settings (`run_settings.ResolvedSettings`) as run.json recorded them."""
        return manifest.resolved_settings()

    @staticmethod
    def stored_columns(store: ScoreStore, kind: str = "pairs") -> set[str] | None:
        """Columns that hold values in a store's `kind` ("pairs" or "tokens") rows (its first chunk: a
        store written before a column existed lacks it, or has it all NaN when the writer filled the
        schema); None when nothing is stored yet, or the chunk is unreadable or fails its sha256.

        Answered from the Parquet footer (`store.held_columns`), not by decoding the rows: the chunk's bytes
        are still checked against the sha256 meta.json recorded for them, as every reader of the store
        does (store.read_verified), but only the columns the footer cannot settle are decoded."""
        try:
            meta = store.meta()
            done = sorted(meta.get("chunks_done") or [])
            if not done:
                return None
            sha = (meta.get("checksums") or {}).get(str(done[0]), {}).get(kind)
            path = store.chunk_path(done[0], kind)
            data = path.read_bytes()
        except (CorruptStoreError, OSError, AttributeError):
            return None
        if sha is not None and hashlib.sha256(data).hexdigest() != sha:
            return None  # corrupt: said by the readers of its values (CorruptStoreError), not guessed here
        try:
            return held_columns(pa.BufferReader(data))
        except (OSError, pa.ArrowException):
            return None

    def ches_store(self, manifest: RunManifest, numerics: str) -> ScoreStore | None:
        """The reference store CHES is read from: the exact numerics' (CHES is a property of the
        reference's weights, computed in its exact scoring pass), whatever numerics a row is in."""
        have = self.numerics(manifest)
        if "exact" not in have:
            return None
        return ScoreStore(self.score_dir(manifest.score_of(manifest.reference, "exact")))

    def not_stored(self, name: str, numerics: str | None = None) -> dict[str, str]:
        """{column: why} for each CHES/squeezing column `pairs(name, numerics)` leaves NaN on every row.

        Old stores (scored before these columns existed) lack them: that is said here, and the
        readers that show or export them say it too, instead of a silent NaN.
        """
        manifest = self.run(name)
        numerics = numerics or self.numerics(manifest)[0]
        out: dict[str, str] = {}
        ches = self.ches_store(manifest, numerics)
        have = self.stored_columns(ches) if ches is not None and ches.exists() else None
        for c in CHES_COLUMNS:
            if ches is None:
                out[c] = "the run has no exact-numerics reference score (CHES is computed in its exact pass)"
            elif have is not None and c not in have:
                out[c] = RESCORE_HINT
        for c in SQUEEZING_COLUMNS:
            if numerics == "trainer":
                out[c] = "the trainer numerics compute no squeezing (exact numerics only)"
                continue
            for entry in manifest.models:
                store = ScoreStore(self.score_dir(manifest.score_of(entry, numerics)))
                names = self.stored_columns(store) if store.exists() else None
                if names is not None and c not in names:
                    out[c] = RESCORE_HINT
                    break
        return out

    def tokens_not_stored(self, name: str, model: str, numerics: str | None = None) -> dict[str, str]:
        """{column: why} for each TOKEN_SQUEEZING_COLUMNS column `tokens(name, model, …, numerics)` leaves
        NaN: the trainer numerics compute none, and a store scored before them lacks them (its first
        chunk holding no value; a store with no token rows at all is not reported here)."""
        manifest = self.run(name)
        numerics = numerics or self.numerics(manifest)[0]
        if numerics == "trainer":
            return dict.fromkeys(TOKEN_SQUEEZING_COLUMNS, "the trainer numerics compute no squeezing (exact "
                                 "numerics only)")
        out: dict[str, str] = {}
        entry = manifest.model(model)
        for prefix, e in (("", entry), ("ref_", manifest.reference)):
            store = ScoreStore(self.score_dir(manifest.score_of(e, numerics)))
            names = self.stored_columns(store, "tokens") if store.exists() else None
            for c in TOKEN_SQUEEZING:
                if names is not None and c not in names:
                    out[prefix + c] = RESCORE_TOKENS_HINT
        return out

    def pairs(self, name: str, numerics: str | None = None) -> pd.DataFrame:
        """The stored numbers, one row per (pair, checkpoint) in `numerics` (None: the run's primary),
        each checkpoint's row joined to the reference's: STORED_PAIRS_COLUMNS. Nothing derived (no β,
        reward, margin or loss): `losses.pair_table` adds those under the run's settings.

        `ref_*` are the reference's numbers for the pair (NaN for a pair the reference score lacks);
        `ches`, `ches_norm` are the reference's from its exact-numerics store (the same on every row of
        a pair); the squeezing columns are the row's model's. Columns a store lacks (stored before they
        existed, or not computed in these numerics) are NaN: `not_stored` says which and why.
        Checkpoints without a stored score yet are left out.
        """
        manifest = self.run(name)
        numerics = numerics or self.numerics(manifest)[0]
        ref = self._reference_columns(manifest, numerics)
        parts: dict[str, list[np.ndarray]] = {}
        ids, models, steps = [], [], []  # per stored checkpoint: its pair ids (Arrow), name, row count, step
        for cp in manifest.checkpoints:
            store = ScoreStore(self.score_dir(manifest.score_of(cp, numerics)))
            if store.exists():
                t = store.read_pairs_table()
                for c, v in joined_columns(t, ref, ("logp_chosen", "logp_rejected", *STORED_NUMBERS), SQUEEZING_COLUMNS).items():
                    parts.setdefault(c, []).append(v)
                ids.append(t["pair_id"])
                models.append((cp.name, t.num_rows))
                steps.append(cp.step)
        if not ids:
            return pd.DataFrame({c: pd.Series(dtype="float64") for c in STORED_PAIRS_COLUMNS})
        counts = np.array([k for _, k in models], dtype=np.int64)
        n = int(counts.sum())
        out = frame(parts, STORED_PAIRS_COLUMNS[3:-1], n)
        out.insert(0, "pair_id", str_array(ids))
        names = pa.array([m for m, _ in models], pa.large_string())
        which = pa.array(np.repeat(np.arange(len(models), dtype=np.int32), counts))
        out.insert(1, "model", str_array([pa.DictionaryArray.from_arrays(which, names).dictionary_decode()]))
        unknown = np.repeat(np.array([s is None for s in steps]), counts)
        out.insert(2, "step", pd.arrays.IntegerArray(
            np.repeat(np.array([0 if s is None else s for s in steps], dtype=np.int64), counts), unknown))
        out["numerics"] = numerics
        return out

    def _reference_columns(self, manifest: RunManifest, numerics: str) -> JoinReference:
        """What every checkpoint row is joined to: the reference's log-probs and squeezing in
        `numerics`, and CHES from its exact-numerics store (NaN when the run has none)."""
        t = self.open_store(manifest.score_of(manifest.reference, numerics)).read_pairs_table()
        index = pd.Index(t["pair_id"].to_numpy(zero_copy_only=False))
        ref = {"ref_logp_chosen": t["logp_chosen"].to_numpy(), "ref_logp_rejected": t["logp_rejected"].to_numpy(),
               **{f"ref_{c}": stored_column(t, c) for c in SQUEEZING_COLUMNS}}
        ches_store = self.ches_store(manifest, numerics)
        ches_t = t if numerics == "exact" else (ches_store.read_pairs_table() if ches_store is not None
                                                and ches_store.exists() else None)
        if ches_t is None:
            return JoinReference(index, ref, index, {c: np.full(len(index), np.nan) for c in CHES_COLUMNS},
                              t["pair_id"], t["pair_id"])
        ches_index = index if ches_t is t else pd.Index(ches_t["pair_id"].to_numpy(zero_copy_only=False))
        return JoinReference(index, ref, ches_index, {c: stored_column(ches_t, c) for c in CHES_COLUMNS},
                          t["pair_id"], ches_t["pair_id"])

    def tokens(self, name: str, model: str, pair_ids: list[str] | None = None,
               numerics: str | None = None) -> pd.DataFrame:
        """One row per response token of `model` (a checkpoint name, or the reference's name) in `numerics`
        (None: the run's primary): TOKENS_COLUMNS.

        ref_* come from the reference joined on (pair_id, side, position); log_ratio = logp − ref_logp.
        The squeezing columns are NaN where a store lacks them: `tokens_not_stored` says which and why.
        """
        manifest = self.run(name)
        entry = manifest.model(model)
        toks = self.open_store(manifest.score_of(entry, numerics)).read_tokens(pair_ids)
        def with_squeezing(t: pd.DataFrame) -> pd.DataFrame:  # an old store's chunks lack them: NaN
            for c in TOKEN_SQUEEZING:
                if c not in t:
                    t[c] = np.full(len(t), np.nan, dtype=np.float32)
            return t

        toks = with_squeezing(toks)
        if entry is manifest.reference:
            for c in ("logp", *TOKEN_SQUEEZING):
                toks[f"ref_{c}"] = toks[c]
        else:
            ref = with_squeezing(self.open_store(manifest.score_of(manifest.reference, numerics))
                                 .read_tokens(pair_ids))
            ref = ref[["pair_id", "side", "position", "logp", *TOKEN_SQUEEZING]].rename(
                columns={c: f"ref_{c}" for c in ("logp", *TOKEN_SQUEEZING)})
            toks = toks.merge(ref, on=["pair_id", "side", "position"], how="left", sort=False)
        toks["log_ratio"] = losses.log_ratio(toks["logp"], toks["ref_logp"]).astype("float32")
        toks["model"] = model
        toks["step"] = pd.array([entry.step] * len(toks), dtype="Int64")
        return toks[TOKENS_COLUMNS]

    def dataset_table(self, dataset_fp: str, pair_ids: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
        """The stored normalized pairs (message lists as JSON text) and their metadata; with `pair_ids`,
        only those pairs' rows (in file order, ids absent from the dataset skipped): the ids are read
        first, then only the row groups holding them (`_DATASET_ROW_GROUP`)."""
        path = self.dataset_path(dataset_fp)
        try:
            if pair_ids is None:
                table = pq.read_table(path)
                meta = table.schema.metadata
            else:
                f = pq.ParquetFile(path)
                meta = f.schema_arrow.metadata
                table = self._dataset_rows(f, pa.array([str(p) for p in pair_ids], pa.string()))
        except FileNotFoundError:
            raise InputError(f"dataset {dataset_fp} is not in workspace {self.root}") from None
        except (pa.ArrowException, OSError) as e:
            raise CorruptStoreError(path, None) from e
        info = json.loads((meta or {}).get(_META_KEY, b"{}"))
        return table.to_pandas(), info

    def dataset_row_groups(self, name: str) -> int:
        """How many row groups run `name`'s dataset file has (footer only): with more than one, a
        pair's text is read without decoding the whole file; files written before them have one."""
        return pq.ParquetFile(self.dataset_path(self.run(name).dataset.fingerprint)).metadata.num_row_groups

    @staticmethod
    def _dataset_rows(f: pq.ParquetFile, wanted: pa.Array) -> pa.Table:
        """The rows of dataset file `f` whose pair_id is in `wanted`, decoding only their row groups."""
        hit = pc.is_in(f.read(columns=["pair_id"])["pair_id"], value_set=wanted).to_numpy(zero_copy_only=False)
        md = f.metadata
        ends = np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)], dtype=np.int64)
        groups = sorted({int(g) for g in np.searchsorted(ends, np.flatnonzero(hit), side="right")})
        if not groups:
            return f.schema_arrow.empty_table()
        table = f.read_row_groups(groups)
        starts = ends - np.array([md.row_group(g).num_rows for g in range(md.num_row_groups)], dtype=np.int64)
        rows = np.concatenate([hit[starts[g]:ends[g]] for g in groups])
        return table.filter(pa.array(rows))

    def dataset_records(self, name: str) -> pd.DataFrame:
        """The run's pairs as given: conversational prompt/chosen/rejected decoded back to message lists."""
        df, info = self.dataset_table(self.run(name).dataset.fingerprint)
        if info.get("conversational"):
            for col in ("prompt", "chosen", "rejected"):
                df[col] = [json.loads(v) if isinstance(v, str) and v[:1] == "[" else v for v in df[col]]
        return df

    def dataset(self, name: str, pair_ids: list[str] | None = None) -> pd.DataFrame:
        """pair_id, prompt, chosen, rejected as display text (then any extra dataset columns); with
        `pair_ids`, only those pairs (`dataset_table`)."""
        df, info = self.dataset_table(self.run(name).dataset.fingerprint, pair_ids)
        if info.get("conversational"):
            for col in ("prompt", "chosen", "rejected"):
                df[col] = [_display(v) for v in df[col]]
        return df
