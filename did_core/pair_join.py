"""Stored pairs rows joined to the reference's, as arrays, and assembled into one DataFrame without
Python objects: the machinery of `Workspace.pairs` (60k pairs × 20 checkpoints in ~0.4 s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class JoinReference:
    """The reference's columns a checkpoint's rows are joined to, by pair id (`Workspace.pairs`)."""

    index: pd.Index
    columns: dict[str, np.ndarray]
    ches_index: pd.Index
    ches: dict[str, np.ndarray]
    ids: pa.ChunkedArray | None = None  # the pair ids of `index` / `ches_index` as stored (Arrow): a
    ches_ids: pa.ChunkedArray | None = None  # checkpoint stored in the same order joins without a lookup


def stored_column(t: pa.Table, c: str) -> np.ndarray:
    """A stored column; NaN for one the store lacks (see `Workspace.not_stored`)."""
    return t[c].to_numpy() if c in t.column_names else np.full(t.num_rows, np.nan)


def _positions(index: pd.Index, ids: pa.ChunkedArray | None, pid: pa.ChunkedArray,
               pid_values: list[np.ndarray]) -> np.ndarray | None:
    """Where each of a checkpoint's pair ids `pid` is in the reference's `index` (-1: absent); None when
    they are the reference's own ids in its order (a unique index): every row joins to itself."""
    if ids is not None and len(ids) == len(pid) and index.is_unique and ids.equals(pid):
        return None
    if not pid_values:
        pid_values.append(pid.to_numpy(zero_copy_only=False))
    return index.get_indexer(pid_values[0])


def joined_columns(t: pa.Table, ref: JoinReference, stored: Sequence[str],
                   optional: Sequence[str]) -> dict[str, np.ndarray]:
    """One checkpoint's stored pairs rows `t` as arrays: its `stored` columns, its `optional` ones (NaN
    when the store lacks them), and the reference's columns joined on pair_id (NaN where the reference
    has no such pair)."""
    n = t.num_rows
    cols: dict[str, np.ndarray] = {c: t[c].to_numpy() for c in stored}
    for c in optional:
        cols[c] = stored_column(t, c)
    pid_values: list[np.ndarray] = []  # the ids as numpy objects, made only when a lookup needs them
    for index, ids, values in ((ref.index, ref.ids, ref.columns), (ref.ches_index, ref.ches_ids, ref.ches)):
        pos = _positions(index, ids, t["pair_id"], pid_values) if values else None
        for c, v in values.items():
            if not len(v):
                cols[c] = np.full(n, np.nan)
            elif pos is None:
                cols[c] = v if v.dtype.kind == "f" else v.astype(np.float64)  # what np.where(pos >= 0, v[pos], nan) is
            else:
                cols[c] = np.where(pos >= 0, v[pos], np.nan)
    return cols


def str_array(chunks: list[pa.Array | pa.ChunkedArray]) -> Any:
    """Arrow strings (or dictionary-encoded strings) as one pandas "str" array, straight from Arrow:
    what `pd.array(<the same values as Python objects>, dtype="str")` gives, nulls as NaN."""
    whole = pa.chunked_array([c.cast(pa.large_string()) for a in chunks
                              for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])], type=pa.large_string())
    return pd.array(whole.combine_chunks(), dtype="str")


def frame(parts: dict[str, list[np.ndarray]], names: list[str], n: int) -> pd.DataFrame:
    """The columns `names`, each the concatenation of its `parts` (the dtype np.concatenate gives it),
    as a DataFrame of `n` rows: the columns of the commonest dtype written once into one 2-D block
    (no stacking copy), the others inserted in place."""
    dtypes = {c: np.result_type(*parts[c]) for c in names}
    common = max(dict.fromkeys(dtypes.values()), key=list(dtypes.values()).count)
    group = [c for c in names if dtypes[c] == common]
    block = np.empty((len(group), n), dtype=common)
    for row, c in zip(block, group, strict=True):
        np.concatenate(parts[c], out=row)
    out = pd.DataFrame(block.T, columns=group, copy=False)
    for loc, c in enumerate(names):  # in order: every column before `loc` is there already
        if dtypes[c] != common:
            out.insert(loc, c, np.concatenate(parts[c]))
    return out
