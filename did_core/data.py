"""Load preference data from any file or folder of docs/REFERENCE.md §10 into normalized pairs.

Files: JSONL (`.jsonl`, `.ndjson`), JSON (a list of records, `{"data": [...]}`, or columns of equal
length; a `.json` file that is really JSON Lines is read as such), CSV (a message list may sit in a
cell as JSON text), Parquet, any of these gzipped (`.gz`), a `datasets.save_to_disk` folder, or a
hub id through `datasets.load_dataset` when online. Formats are normalized in `did_core.formats`.

Rows are counted from 0, as `pair_id` is; a JSONL error also gives the 1-based line.

Why one module of ~360 lines: every file type's reader raises the same one-line InputError naming
file, row and column, through shared helpers; split by file type, each would repeat them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from did_core.errors import InputError
from did_core.formats import normalize_rows

TEXT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
BINARY_KINDS = {".parquet": "parquet", ".pq": "parquet"}
CORE_COLUMNS = ("pair_id", "prompt", "chosen", "rejected")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class PreferenceData:
    """Normalized preference pairs, whatever the file and format they came from."""

    pairs: pd.DataFrame
    """Columns pair_id (str), prompt, chosen, rejected, then any extra columns of the source."""
    conversational: bool
    """True: prompt/chosen/rejected are lists of {"role", "content"} dicts; False: strings."""
    source: str
    """The path or hub id as given."""
    fingerprint: str
    """sha256 of the normalized (pair_id, prompt, chosen, rejected) content, not of the file bytes."""


def display_text(value: Any) -> str:
    """A prompt or response as plain text: strings as they are, message lists as `role: content` blocks.

    Also accepts a message list stored as JSON text (as the workspace stores it), a numpy array of
    messages (as pandas returns Parquet lists), and None (empty string).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        if value.startswith('[{"') or value.startswith("[{'"):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            if isinstance(parsed, list) and all(isinstance(m, dict) and "role" in m for m in parsed):
                return display_text(parsed)
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return "\n\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                           for m in value)
    return str(value)


def _decode(raw: bytes, path: str) -> str:
    """Strict UTF-8 (a BOM is dropped), refusing binary content with a message that says where."""
    if b"\x00" in raw[:8192]:
        raise InputError(f"{path}: looks like a binary file (NUL bytes), not text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}: not valid UTF-8 at byte offset {e.start} (line {line}): "
                         f"byte {raw[e.start:e.start + 1]!r}") from None


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _check_unicode(rec: dict[str, Any], where: str) -> None:
    """Refuse a lone surrogate escape ("\\ud800"): JSON lets it through, but it is not Unicode, and
    UTF-8 encoding (fingerprints, Parquet, the tokenizer) would fail far from the input."""
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{where}: a lone UTF-16 surrogate escape ({e.object[e.start]!r}) is not valid "
                         "Unicode text") from None


def _read_jsonl(text: str, path: str, limit: int | None) -> tuple[list[dict[str, Any]], list[int]]:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    # Lines end at "\n" only: str.splitlines() would also cut at U+2028, U+2029 and U+0085, which
    # JSON allows unescaped inside strings (json.dumps(..., ensure_ascii=False) writes them so).
    for n, line in enumerate(text.split("\n"), start=1):
        if limit is not None and len(records) >= limit:
            break
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {n}: invalid JSON ({e.msg}, column {e.colno}); "
                             "is the file truncated or corrupt?") from None
        except (ValueError, RecursionError) as e:  # nesting too deep, an integer of > 4300 digits
            raise InputError(f"{path}: line {n}: unreadable JSON ({_first_line(e)})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{path}: line {n}: expected a JSON object, got {type(rec).__name__}")
        if "\\u" in line:  # text was strictly decoded: only an escape can hold a surrogate
            _check_unicode(rec, f"{path}: line {n}")
        records.append(rec)
        lines.append(n)
    return records, lines


def _read_json(text: str, path: str, limit: int | None) -> tuple[list[dict[str, Any]], list[int] | None]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several JSON documents: JSON Lines under a .json name
            return _read_jsonl(text, path, limit)
        raise InputError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                         "is the file truncated or corrupt?") from None
    except (ValueError, RecursionError) as e:  # nesting too deep, an integer of > 4300 digits
        raise InputError(f"{path}: unreadable JSON ({_first_line(e)})") from None
    if isinstance(obj, dict):
        lists = {k: v for k, v in obj.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            obj = next(iter(lists.values()))  # {"data": [...]}
        elif lists and len(lists) == len(obj) and len({len(v) for v in lists.values()}) == 1:
            n = len(next(iter(lists.values())))  # columns: {"chosen": [...], "rejected": [...]}
            obj = [{k: v[i] for k, v in lists.items()} for i in range(n)]
        else:
            raise InputError(f"{path}: a JSON object must hold one list of records or columns of equal length; "
                             f"found keys {sorted(obj)}")
    if not isinstance(obj, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(obj).__name__}")
    escapes = "\\u" in text
    for i, rec in enumerate(obj):
        if not isinstance(rec, dict):
            raise InputError(f"{path}: row {i}: expected a JSON object, got {type(rec).__name__}")
        if escapes:
            _check_unicode(rec, f"{path}: row {i}")
    return obj[:limit] if limit is not None else obj, None


def _read_csv(text: str, path: str, limit: int | None) -> tuple[list[dict[str, Any]], list[int] | None]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return [], None
        records = []
        for values in reader:
            if limit is not None and len(records) >= limit:
                break
            if not values:
                continue
            if len(values) != len(header):
                raise InputError(f"{path}: line {reader.line_num}: {len(values)} fields, header has {len(header)}")
            records.append(dict(zip(header, values)))
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    # A message list in CSV is JSON text; decide per column from the first row.
    for column in ("prompt", "chosen", "rejected"):
        if records and records[0].get(column, "").startswith("[{"):
            for i, rec in enumerate(records):
                try:
                    rec[column] = json.loads(rec[column])
                except ValueError as e:
                    raise InputError(f"{path}: row {i}, column {column!r}: expected a JSON message list like "
                                     f"row 0 ({e})") from None
    return records, None


def _read_parquet(raw: bytes, path: str, limit: int | None) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(raw))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    table = table.select([c for c in table.column_names if not c.startswith("__index_level_")])
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()


def _read_dataset_object(ds: Any, source: str, limit: int | None) -> list[dict[str, Any]]:
    """A `datasets.Dataset` or `DatasetDict` (one split, or "train") as records."""
    from datasets import DatasetDict

    if isinstance(ds, DatasetDict):
        splits = list(ds.keys())
        if len(splits) == 1:
            ds = ds[splits[0]]
        elif "train" in splits:
            ds = ds["train"]
        else:
            raise InputError(f"{source}: several splits {splits} and none is 'train'; save the one you want")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds.to_list()


def _read_source(source: str, limit: int | None) -> tuple[list[dict[str, Any]], list[int] | None]:
    """Records (plain dicts) and, for JSONL, their 1-based line numbers."""
    path = Path(source)
    if path.is_dir():
        if not any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            raise InputError(f"{source}: a folder, but not one written by datasets' save_to_disk "
                             "(no dataset_info.json or dataset_dict.json)")
        import datasets

        try:
            return _read_dataset_object(datasets.load_from_disk(str(path)), source, limit), None
        except InputError:
            raise
        except Exception as e:  # datasets raises many kinds; the user needs one line
            raise InputError(f"{source}: cannot read the datasets folder ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not path.exists():
        return _read_hub(source, limit), None
    name = path.name.lower()
    compressed = name.endswith(".gz")
    ext = Path(name[:-3] if compressed else name).suffix
    kind = TEXT_KINDS.get(ext) or BINARY_KINDS.get(ext)
    if kind is None:
        raise InputError(f"{source}: unknown file type {ext or '(none)'!r}; expected .jsonl, .json, .csv or "
                         ".parquet (optionally .gz), or a datasets save_to_disk folder")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{source}: cannot read ({e.strerror})") from None
    if compressed:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{source}: corrupt or truncated gzip file ({e})") from None
    if kind == "parquet":
        return _read_parquet(raw, source, limit), None
    text = _decode(raw, source)
    reader = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}[kind]
    return reader(text, source, limit)


def _read_hub(source: str, limit: int | None) -> list[dict[str, Any]]:
    if not _HUB_ID.match(source) or Path(source).suffix.lower() in {*TEXT_KINDS, *BINARY_KINDS, ".gz"}:
        raise InputError(f"{source}: no such file or folder")
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline:
        raise InputError(f"{source}: not a local file or folder, and the Hugging Face Hub is offline "
                         "(HF_HUB_OFFLINE=1), so it cannot be loaded as a hub dataset id")
    import datasets

    try:
        ds = datasets.load_dataset(source)
    except Exception as e:  # network, missing dataset, auth: one line for the user
        raise InputError(f"{source}: no such file or folder, and loading it as a hub dataset failed "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return _read_dataset_object(ds, source, limit)


def _rename(records: list[dict[str, Any]], column_map: dict[str, str], source: str) -> list[dict[str, Any]]:
    columns = _columns(records)
    missing = [c for c in column_map if c not in columns]
    if missing:
        raise InputError(f"{source}: column mapping names {', '.join(map(repr, missing))}, not in the data; "
                         f"found: {', '.join(map(repr, columns))}")
    for old, new in column_map.items():
        if new in columns and new not in column_map and new != old:
            raise InputError(f"{source}: column mapping renames {old!r} to {new!r}, but the data already has "
                             f"a {new!r} column")
    return [{column_map.get(k, k): v for k, v in rec.items()} for rec in records]


def _columns(records: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for rec in records for k in rec))


def _pair_ids(rows: list[dict[str, Any]], source: str, id_column: str | None) -> list[str]:
    if id_column is None:
        return [str(i) for i in range(len(rows))]
    ids: list[str] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        value = row.pop(id_column, None)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            raise InputError(f"{source}: row {i}, column {id_column!r}: missing id")
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # pandas/CSV round trips turn integer ids into floats
        pid = str(value)
        if pid in seen:
            raise InputError(f"{source}: row {i}, column {id_column!r}: duplicate id {pid!r} (also row {seen[pid]})")
        seen[pid] = i
        ids.append(pid)
    return ids


def fingerprint_pairs(pairs: pd.DataFrame) -> str:
    """sha256 of a canonical JSON of (pair_id, prompt, chosen, rejected), independent of the file type."""
    h = hashlib.sha256(b"did-pairs-v1\n")
    for row in zip(*(pairs[c].tolist() for c in CORE_COLUMNS)):
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def load_preference_data(source: Any, *, column_map: dict[str, str] | None = None,
                         limit: int | None = None) -> PreferenceData:
    """Read `source` (file, save_to_disk folder, hub id, or an in-memory `datasets.Dataset`), rename
    columns, normalize the §4 format.

    `column_map` renames source columns (`{"question": "prompt", "good": "chosen"}`); `limit` keeps
    the first N rows. `pair_id` is the `id` column as text when present (else a `pair_id` column),
    otherwise the 0-based row index. Raises InputError, with one line naming file, row and column.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if hasattr(source, "to_list") and hasattr(source, "column_names"):  # an in-memory datasets.Dataset
        label = f"datasets.Dataset({len(source)} rows)"
        records, lines, source = _read_dataset_object(source, label, limit), None, label
    else:
        source = str(source)
        records, lines = _read_source(source, limit)
    if not records:
        raise InputError(f"{source}: empty dataset (no rows)")
    if column_map:
        records = _rename(records, column_map, source)
    columns = _columns(records)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(map(repr, missing))}; found: "
                         f"{', '.join(map(repr, columns))} (rename with a column mapping)")
    rows, conversational = normalize_rows(records, source, lines)
    id_column = "id" if "id" in columns else "pair_id" if "pair_id" in columns else None
    ids = _pair_ids(rows, source, id_column)
    pairs = pd.DataFrame({"pair_id": pd.Series(ids, dtype=object)})
    for column in ("prompt", "chosen", "rejected"):
        pairs[column] = pd.Series([r.pop(column) for r in rows], dtype=object)
    for column in [c for c in _columns(rows) if c not in CORE_COLUMNS]:
        pairs[column] = pd.Series([r.get(column) for r in rows], dtype=object)
    return PreferenceData(pairs=pairs, conversational=conversational, source=source,
                          fingerprint=fingerprint_pairs(pairs))
