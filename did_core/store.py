"""Low-level storage: one score's chunked Parquet files (`ScoreStore`), checked and written atomically
(did_core/files.py); results are keyed by did_core/fingerprints.py.

Layout of one score (see docs/ARCHITECTURE.md):

    scores/<score_fp>/meta.json                 settings, model, dataset, chunks done + sha256 per file
    scores/<score_fp>/chunk-00000.pairs.parquet one row per pair
    scores/<score_fp>/chunk-00000.tokens.parquet one row per response token
    scores/<score_fp>/pairs.parquet             merged pairs of a complete score (a cache, rebuilt on demand)

Every file is written to a unique `*.tmp` in the same directory, fsynced, then `os.replace`d, so a
reader never sees a half-written file and a `kill -9` leaves only a stray `*.tmp` file behind, which
the next scoring or sampling job removes (`remove_orphaned_temps`: its writer's pid is gone). A chunk
counts as done only once both of its files are in place *and* listed in meta.json with their sha256;
meta.json is updated under an exclusive `flock`, so several ranks may write chunks of one score.
Readers verify the sha256 of every file they read and raise `CorruptStoreError` on a mismatch;
`done_chunks()` and `is_complete()` leave corrupt chunks out, so the score job recomputes them.

`held_columns(file)` says which columns of a stored file hold values, from its footer.

Why one module of ~370 lines: everything that knows the Parquet files of a score (their layout,
checksums, locking, reading and what their footers say) is here, and the product reads them only through it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from did_core.errors import InputError
from did_core.files import atomic_write_bytes, pid_alive

PAIRS_SCHEMA = pa.schema([
    ("pair_id", pa.string()),
    ("logp_chosen", pa.float64()), ("logp_rejected", pa.float64()),
    ("n_tokens_chosen", pa.int64()), ("n_tokens_rejected", pa.int64()),
    ("dropped_chosen", pa.int64()), ("dropped_rejected", pa.int64()),
    ("did_entropy_chosen", pa.float64()), ("did_entropy_rejected", pa.float64()),
    ("did_entropy_max_chosen", pa.float64()), ("did_entropy_max_rejected", pa.float64()),
    # CHES (the reference's score only; NaN in a policy's) and squeezing (every model, exact numerics):
    # docs/ANALYTICS.md, "CHES and squeezing". Stores written before these columns have other
    # fingerprints (chunked.EXACT_STORED); `Workspace.not_stored` names what an old store lacks.
    ("ches", pa.float64()), ("ches_norm", pa.float64()),
    ("top1_prob_chosen", pa.float64()), ("top1_prob_rejected", pa.float64()),
    ("token_entropy_chosen", pa.float64()), ("token_entropy_rejected", pa.float64()),
])
TOKENS_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("side", pa.string()), ("position", pa.int32()), ("token_id", pa.int32()),
    ("token", pa.string()), ("logp", pa.float32()), ("did_entropy", pa.float32()),
    # squeezing per token (the row's model's own next-token distribution; exact numerics, NaN in the
    # trainer's): what the pairs rows' top1_prob_* / token_entropy_* are the means of
    ("top1_prob", pa.float32()), ("token_entropy", pa.float32()),
])
MERGED_PAIRS = "pairs.parquet"
class CorruptStoreError(InputError):
    """A stored file does not match the sha256 recorded when it was written (or vanished, or won't parse).

    `chunk` is the chunk id, or None for meta.json / the merged cache. The score job recomputes such
    chunks; readers surface the message (an InputError, so the CLI prints it as `error: ...`).
    """

    def __init__(self, path: Path, chunk: int | None) -> None:
        super().__init__(f"stored result {path} is corrupt or missing; rerun `score` to recompute it")
        self.path = path
        self.chunk = chunk


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str).encode("utf-8"))


DELTA_COLUMNS = ("position",)
"""Integer columns that count up within a run of rows: delta-encoded (0.07 B a row, against 0.37 with a
dictionary, on a 250-token lognormal chunk: bench/dashboard_bench.py's storage report)."""


def column_encodings(schema: pa.Schema) -> dict:
    """`pq.write_table`'s encoding options for `schema`: float columns BYTE_STREAM_SPLIT (their bytes
    regrouped so that zstd finds the shared exponents: a float32 score column takes ~3.3 B a value
    instead of 4.6 with the dictionary pyarrow tries first and abandons), DELTA_COLUMNS delta-encoded,
    every other column dictionary-encoded (ids and strings that repeat)."""
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    delta = [f.name for f in schema if f.name in DELTA_COLUMNS and pa.types.is_integer(f.type)]
    return {"use_dictionary": [f.name for f in schema if f.name not in floats and f.name not in delta],
            "use_byte_stream_split": floats,
            "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED") or None}


def table_to_parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    """`table` as zstd Parquet bytes, encoded per `column_encodings`; `row_group_size` rows a row group
    (None: pyarrow's default, one group up to 1Mi rows), so that a reader can decode one group of a
    large file, not all of it."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size, **column_encodings(table.schema))
    return buf.getvalue()


def pieces_once(tokens: pa.Table) -> pa.Table:
    """`tokens` with each token string kept on the first row of its token_id only (null on the others),
    when the strings are a function of the ids (always, from the product's writers: one tokenizer's
    pieces); otherwise unchanged. The strings then take ~0.35 B a row on disk instead of ~1.95;
    `pieces_filled` restores them on reading."""
    ids = tokens["token_id"].to_numpy(zero_copy_only=False)
    if not len(ids) or tokens["token"].null_count:
        return tokens
    _, first = np.unique(ids, return_index=True)
    vocab_ids, vocab = pa.array(ids[first]), tokens["token"].take(pa.array(first))
    if not pc.all(pc.equal(vocab.take(pc.index_in(tokens["token_id"], value_set=vocab_ids)), tokens["token"])).as_py():
        return tokens  # one id, two strings: stored as they are
    keep = np.zeros(len(ids), dtype=bool)
    keep[first] = True
    thinned = pc.if_else(pa.array(keep), tokens["token"], pa.scalar(None, pa.string()))
    return tokens.set_column(tokens.schema.get_field_index("token"), "token", thinned)


def pieces_filled(tokens: pa.Table, rows: pa.Array | None = None) -> pa.Table:
    """The token rows of one stored file with every token string, from the rows that carry it
    (`pieces_once`); `rows`: a boolean mask of the rows wanted (None: all)."""
    if "token" not in tokens.column_names or not tokens["token"].null_count:
        return tokens if rows is None else tokens.filter(rows)
    carried = tokens.filter(pc.is_valid(tokens["token"]))
    out = tokens if rows is None else tokens.filter(rows)
    filled = carried["token"].take(pc.index_in(out["token_id"], value_set=carried["token_id"]))
    return out.set_column(out.schema.get_field_index("token"), "token", filled)


def atomic_write_parquet(path: str | Path, table: pa.Table) -> str:
    """Write `table` atomically; return the sha256 of the bytes written."""
    data = table_to_parquet_bytes(table)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def conform(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """`df` as an Arrow table with `schema`'s columns first (cast), NaN for missing float columns, extras kept.

    Raises ValueError when a non-float column of the schema is missing.
    """
    n = len(df)
    arrays, fields = [], []
    for field in schema:
        if field.name in df.columns:
            arrays.append(pa.array(df[field.name].to_numpy(), from_pandas=True).cast(field.type))
        elif pa.types.is_floating(field.type):
            arrays.append(pa.nulls(n, field.type).fill_null(float("nan")))
        else:
            raise ValueError(f"column {field.name!r} missing from the rows to store")
        fields.append(field)
    for name in df.columns:
        if name not in schema.names:
            arrays.append(pa.array(df[name].to_numpy(), from_pandas=True))
            fields.append(pa.field(name, arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def read_verified(path: Path, sha: str | None, chunk: int | None, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file after checking its sha256 (skipped when `sha` is None)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CorruptStoreError(path, chunk) from e
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        raise CorruptStoreError(path, chunk)
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise CorruptStoreError(path, chunk) from e


def remove_orphaned_temps(directory: str | Path) -> list[Path]:
    """Remove the temp files of `atomic_write_bytes` (`.<name>.<pid>.<hex>.tmp`) in `directory` whose
    writing process no longer exists: what a `kill -9` mid-write leaves. Temp files of live processes
    (another rank writing now) and every other file are kept. Returns the removed paths."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp") if Path(directory).is_dir() else []:
        parts = tmp.name.rsplit(".", 3)  # ['.<name>', '<pid>', '<hex>', 'tmp']
        if len(parts) != 4 or not parts[1].isdigit() or pid_alive(int(parts[1])):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


class ScoreStore:
    """The chunked results of one (dataset, model, tokenizer, settings) score: `scores/<fp>/`."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    # -- meta -------------------------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def meta(self) -> dict:
        """meta.json as stored (raises CorruptStoreError when unreadable)."""
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CorruptStoreError(self.meta_path, None) from e

    def exists(self) -> bool:
        return self.meta_path.is_file()

    @contextlib.contextmanager
    def _locked_meta(self) -> Iterator[dict]:
        """Read-modify-write meta.json under an exclusive lock (several ranks may write chunks)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                meta = self.meta()
                yield meta
                atomic_write_json(self.meta_path, meta)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def init_meta(self, meta: dict) -> None:
        """Create meta.json if absent or unreadable (first writer wins; chunks of a valid meta are kept).

        An unreadable meta.json loses the chunk checksums, so every chunk is recomputed.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                try:
                    valid = isinstance(self.meta().get("chunks_done"), list)
                except (CorruptStoreError, AttributeError):
                    valid = False
                if not valid:
                    atomic_write_json(self.meta_path, {**meta, "chunks_done": [], "checksums": {},
                                                       "complete": False})
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    # -- chunks -----------------------------------------------------------------------------------------
    def chunk_path(self, i: int, kind: str) -> Path:
        return self.dir / f"chunk-{i:05d}.{kind}.parquet"

    def write_chunk(self, i: int, pairs_df: pd.DataFrame, tokens_df: pd.DataFrame | None) -> None:
        """Store chunk `i` (both files, atomically), then record it as done with its checksums.

        `pairs_df` follows PAIRS_SCHEMA (missing float columns become NaN), `tokens_df` TOKENS_SCHEMA
        (None: no token rows for this score). Rewriting a chunk replaces it.
        """
        if i < 0:
            raise ValueError(f"chunk id must be >= 0, got {i}")
        sums = {"pairs": atomic_write_parquet(self.chunk_path(i, "pairs"), conform(pairs_df, PAIRS_SCHEMA))}
        if tokens_df is not None:
            sums["tokens"] = atomic_write_parquet(self.chunk_path(i, "tokens"),
                                                  pieces_once(conform(tokens_df, TOKENS_SCHEMA)))
        with self._locked_meta() as meta:
            meta["checksums"][str(i)] = sums
            meta["chunks_done"] = sorted(set(meta["chunks_done"]) | {i})
            meta["complete"] = False
            meta.pop("merged", None)

    def _chunk_ok(self, i: int, sums: dict) -> bool:
        return all(self.chunk_path(i, kind).is_file() and sha256_file(self.chunk_path(i, kind)) == sha
                   for kind, sha in sums.items())

    def done_chunks(self) -> set[int]:
        """Chunk ids whose files are present and match their recorded sha256 (corrupt ones are left out)."""
        if not self.exists():
            return set()
        meta = self.meta()
        return {i for i in meta["chunks_done"] if self._chunk_ok(i, meta["checksums"].get(str(i), {}))}

    def expected_chunks(self, meta: dict | None = None) -> set[int] | None:
        """Chunk ids a complete score has, from meta's n_pairs and chunk_size (None when unknown)."""
        meta = meta or self.meta()
        n, size = meta.get("n_pairs"), meta.get("chunk_size")
        if not n or not size:
            return None
        return set(range(-(-int(n) // int(size))))

    def mark_complete(self) -> None:
        """Flag the score complete and write the merged pairs cache. Raises RuntimeError if chunks are missing."""
        done = self.done_chunks()
        expected = self.expected_chunks()
        if expected is not None and not expected <= done:
            raise RuntimeError(f"{self.dir}: chunks {sorted(expected - done)[:10]} missing or corrupt")
        merged = self._read_pairs_chunks(sorted(done))
        sha = atomic_write_parquet(self.dir / MERGED_PAIRS, merged)
        with self._locked_meta() as meta:
            meta["complete"] = True
            meta["merged"] = {"pairs": sha, "chunks": sorted(done)}

    def is_complete(self) -> bool:
        """True when flagged complete and every chunk verifies (a full sha256 pass over the chunk files)."""
        if not self.exists():
            return False
        meta = self.meta()
        if not meta.get("complete"):
            return False
        expected = self.expected_chunks(meta) or set(meta["chunks_done"])
        return expected <= self.done_chunks()

    # -- readers ----------------------------------------------------------------------------------------
    def _read_pairs_chunks(self, chunks: list[int]) -> pa.Table:
        """Verified pair rows of `chunks`, with an internal `_chunk` column (int32) locating each pair."""
        meta = self.meta()
        tables = []
        for i in chunks:
            t = read_verified(self.chunk_path(i, "pairs"), meta["checksums"][str(i)]["pairs"], i)
            tables.append(t.append_column("_chunk", pa.array([i] * t.num_rows, pa.int32())))
        if not tables:
            return PAIRS_SCHEMA.empty_table().append_column("_chunk", pa.array([], pa.int32()))
        return pa.concat_tables(tables, promote_options="default")

    def _pairs_with_chunk(self, meta: dict) -> pa.Table:
        merged = meta.get("merged")
        if merged and merged.get("chunks") == sorted(meta["chunks_done"]):
            try:
                return read_verified(self.dir / MERGED_PAIRS, merged["pairs"], None)
            except CorruptStoreError:
                pass  # the cache is only a cache: fall back to the verified chunks
        return self._read_pairs_chunks(sorted(meta["chunks_done"]))

    def read_pairs_table(self) -> pa.Table:
        """All stored pair rows as Arrow (merged cache when valid, else the done chunks, verified)."""
        return self._pairs_with_chunk(self.meta()).drop_columns(["_chunk"])

    def read_pairs(self) -> pd.DataFrame:
        """All stored pair rows (PAIRS_SCHEMA columns first). Raises CorruptStoreError on a bad chunk."""
        return self.read_pairs_table().to_pandas()

    def read_tokens(self, pair_ids: list[str] | None = None) -> pd.DataFrame:
        """Token rows (TOKENS_SCHEMA), all or only those of `pair_ids`, verified chunk by chunk.

        With `pair_ids`, only the chunks holding those pairs are read (located via the pairs table).
        """
        meta = self.meta()
        chunks = sorted(meta["chunks_done"])
        wanted = None
        if pair_ids is not None:
            wanted = pa.array([str(p) for p in pair_ids], pa.string())
            located = self._pairs_with_chunk(meta)
            hit = located.filter(pc.is_in(located["pair_id"], value_set=wanted))
            chunks = sorted(set(hit["_chunk"].to_pylist()))
        tables = []
        for i in chunks:
            sha = meta["checksums"][str(i)].get("tokens")
            if sha is None:
                continue
            t = read_verified(self.chunk_path(i, "tokens"), sha, i)
            tables.append(pieces_filled(t, None if wanted is None else pc.is_in(t["pair_id"], value_set=wanted)))
        if not tables:
            return TOKENS_SCHEMA.empty_table().to_pandas()
        return pa.concat_tables(tables, promote_options="default").to_pandas()


def held_columns(source: Any) -> set[str]:
    """The columns of a Parquet file that hold at least one value (a float column: one that is neither
    NaN nor null; any other: one that is not null), from the footer's per-row-group statistics. A float
    column with a min/max holds a number (Parquet's min/max skip NaN; an all-NaN column has none); a
    column whose null count is its length holds nothing. What the statistics leave open (a float
    column with no min/max and some non-null entries: all NaN, or written without statistics; a
    nested column; no statistics at all) is decided by decoding those columns alone. A file without
    rows: every column (nothing says a value is missing)."""
    f = pq.ParquetFile(source)
    md, schema = f.metadata, f.schema_arrow
    if md.num_rows == 0:
        return set(schema.names)
    held: set[str] = set()
    open_: set[str] = set()  # what the footer leaves open: decoded
    paths = [md.schema.column(j).path for j in range(md.num_columns)]
    index = {path: j for j, path in enumerate(paths)}  # a flat column is one leaf, its path its name
    for name in schema.names:
        if name not in index:
            open_.add(name)  # nested (leaves "name.list.element", …): decoded
            continue
        floating = pa.types.is_floating(schema.field(name).type)
        empty = True  # so far: every row group holds only nulls (or, for floats, only NaN and nulls)
        for g in range(md.num_row_groups):
            col = md.row_group(g).column(index[name])
            stats = col.statistics
            if stats is None or not stats.has_null_count:
                open_.add(name)
                break
            non_null = col.num_values - stats.null_count
            if floating and stats.has_min_max:
                if math.isnan(stats.min) or math.isnan(stats.max):  # an old writer's NaN min/max
                    open_.add(name)
                else:
                    held.add(name)
                break
            if non_null > 0:
                if not floating:
                    held.add(name)
                    break
                empty = False  # non-null floats without a min/max: all NaN, or no min/max written
        else:
            if not empty:
                open_.add(name)
    if open_:
        t = f.read(columns=sorted(open_))
        held |= {c for c in t.column_names
                 if pc.any(pc.invert(pc.is_nan(t[c]) if pa.types.is_floating(t[c].type) else pc.is_null(t[c]))).as_py()}
    return held
