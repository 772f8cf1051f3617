"""One score's chunked store: chunk round trip, half-written and corrupt chunks, meta repair."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from did_core.store import CorruptStoreError, ScoreStore, pieces_filled, pieces_once, table_to_parquet_bytes
from did_core.workspace import Workspace


def _pairs(ids: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(ids)
    return pd.DataFrame({"pair_id": ids, "logp_chosen": rng.normal(-20, 5, n), "logp_rejected": rng.normal(-25, 5, n),
                         "n_tokens_chosen": rng.integers(1, 9, n), "n_tokens_rejected": rng.integers(1, 9, n),
                         "dropped_chosen": 0, "dropped_rejected": 0})


def _tokens(ids: list[str]) -> pd.DataFrame:
    rows = [(p, side, k, 7 + k, f"t{k}", -1.0 - k, 0.5) for p in ids for side in ("chosen", "rejected")
            for k in range(3)]
    return pd.DataFrame(rows, columns=["pair_id", "side", "position", "token_id", "token", "logp", "did_entropy"])


def test_chunk_round_trip_and_tokens_lookup(tmp_path):
    store = Workspace(tmp_path).score_store("ab" * 10, {"n_pairs": 5, "chunk_size": 3})
    assert store.done_chunks() == set() and not store.is_complete()
    ids = [str(i) for i in range(5)]
    store.write_chunk(1, _pairs(ids[3:]), _tokens(ids[3:]))
    with pytest.raises(RuntimeError, match="missing"):
        store.mark_complete()
    store.write_chunk(0, _pairs(ids[:3]), _tokens(ids[:3]))
    store.mark_complete()
    assert store.done_chunks() == {0, 1} and store.is_complete()
    got = store.read_pairs()
    assert list(got["pair_id"]) == ids
    assert math.isnan(got["did_entropy_chosen"][0])  # missing float column stored as NaN
    np.testing.assert_allclose(got["logp_chosen"][:3], _pairs(ids[:3])["logp_chosen"])
    toks = store.read_tokens(["4", "1"])
    assert set(toks["pair_id"]) == {"1", "4"} and len(toks) == 12
    assert str(toks["position"].dtype) == "int32" and str(toks["logp"].dtype) == "float32"
    assert len(store.read_tokens()) == 30


def test_half_written_chunk_is_not_done(tmp_path):
    store = ScoreStore(tmp_path / "s")
    store.init_meta({"n_pairs": 3, "chunk_size": 3})
    # a chunk whose files landed but whose meta record did not (killed in between) is not done
    store.chunk_path(0, "pairs").write_bytes(b"garbage")
    assert store.done_chunks() == set()


def test_corrupted_chunk_is_detected(tmp_path):
    store = ScoreStore(tmp_path / "s")
    store.init_meta({"n_pairs": 4, "chunk_size": 2})
    store.write_chunk(0, _pairs(["0", "1"]), _tokens(["0", "1"]))
    store.write_chunk(1, _pairs(["2", "3"]), _tokens(["2", "3"]))
    store.mark_complete()
    path = store.chunk_path(1, "tokens")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.done_chunks() == {0} and not store.is_complete()  # the score job recomputes chunk 1
    with pytest.raises(CorruptStoreError) as e:
        store.read_tokens()
    assert e.value.chunk == 1
    assert len(store.read_pairs()) == 4  # pairs files are intact
    store.chunk_path(0, "pairs").write_bytes(b"PAR1 not really")
    (store.dir / "pairs.parquet").unlink()  # without the merged cache, the damaged chunk is read and caught
    with pytest.raises(CorruptStoreError):
        store.read_pairs()


def test_corrupt_meta_is_reset(tmp_path):
    store = Workspace(tmp_path).score_store("ab" * 10, {"n_pairs": 2, "chunk_size": 2})
    store.write_chunk(0, _pairs(["0", "1"]), None)
    store.meta_path.write_text("{truncated")
    with pytest.raises(CorruptStoreError):
        store.read_pairs()
    store = Workspace(tmp_path).score_store("ab" * 10, {"n_pairs": 2, "chunk_size": 2})
    assert store.done_chunks() == set() and store.meta()["n_pairs"] == 2  # recomputed from scratch


def test_token_strings_stored_once_per_file_and_read_back_whole(tmp_path):
    """A token file keeps each piece on the first row of its id only; readers get every row's piece,
    for all rows and for a few pairs whose pieces sit on other pairs' rows."""
    store = ScoreStore(tmp_path / "s")
    store.init_meta({"n_pairs": 4, "chunk_size": 4})
    ids = [str(i) for i in range(4)]
    written = _tokens(ids)
    store.write_chunk(0, _pairs(ids), written)
    raw = pq.read_table(store.chunk_path(0, "tokens"))
    assert raw["token"].null_count == len(written) - written["token_id"].nunique()
    enc = pq.ParquetFile(store.chunk_path(0, "tokens")).metadata.row_group(0)
    names = [enc.column(j).path_in_schema for j in range(enc.num_columns)]
    assert "BYTE_STREAM_SPLIT" in enc.column(names.index("logp")).encodings
    assert "DELTA_BINARY_PACKED" in enc.column(names.index("position")).encodings
    got = store.read_tokens()
    pd.testing.assert_series_equal(got["token"], written["token"], check_names=False)
    few = store.read_tokens(["3"])  # pair 3's pieces are carried by pair 0's rows
    assert list(few["token"]) == ["t0", "t1", "t2"] * 2


def test_token_strings_that_are_not_a_function_of_the_ids_are_kept():
    t = pa.table({"token_id": pa.array([5, 5, 6], pa.int32()), "token": ["a", "b", "c"]})
    assert pieces_once(t).equals(t)
    once = pieces_once(pa.table({"token_id": pa.array([5, 6, 5], pa.int32()), "token": ["a", "c", "a"]}))
    assert once["token"].to_pylist() == ["a", "c", None]
    assert pieces_filled(once)["token"].to_pylist() == ["a", "c", "a"]


def test_files_written_before_pieces_once_read_unchanged(tmp_path):
    """A token file with every piece on every row (the old layout) reads as it is."""
    store = ScoreStore(tmp_path / "s")
    store.init_meta({"n_pairs": 2, "chunk_size": 2})
    store.write_chunk(0, _pairs(["0", "1"]), _tokens(["0", "1"]))
    path = store.chunk_path(0, "tokens")
    path.write_bytes(table_to_parquet_bytes(pieces_filled(pq.read_table(path))))
    meta = store.meta()
    from did_core.store import atomic_write_json, sha256_file
    meta["checksums"]["0"]["tokens"] = sha256_file(path)
    atomic_write_json(store.meta_path, meta)
    assert pq.read_table(path)["token"].null_count == 0
    pd.testing.assert_frame_equal(store.read_tokens(), store.read_tokens(["0", "1"]))
    assert list(store.read_tokens(["1"])["token"]) == ["t0", "t1", "t2"] * 2
