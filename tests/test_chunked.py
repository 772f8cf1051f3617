"""did_core/chunked.py's pure parts: the chunks a job's pairs are cut into (against a naive loop), the
chunk size from the environment, and the blocks of chunks whose reference inputs fit the cache together."""

from __future__ import annotations

import pytest

from did_core import chunked
from did_core.chunked import chunk, n_chunks


@pytest.mark.parametrize("size", [1, 3, 7, 10, 50])
@pytest.mark.parametrize("n_pairs", [0, 1, 9, 10, 11, 49])
def test_chunks_cover_the_pairs_once_in_order(n_pairs, size):
    pairs = list(range(n_pairs))
    naive, current = [], []
    for p in pairs:  # the naive cut: start a new chunk when the current one is full
        current.append(p)
        if len(current) == size:
            naive.append(current)
            current = []
    if current or not naive:
        naive.append(current)
    assert n_chunks(n_pairs, size) == len(naive)
    assert [list(chunk(pairs, c, size)) for c in range(n_chunks(n_pairs, size))] == naive


@pytest.mark.parametrize(("value", "want"), [(None, chunked.CHUNK_SIZE), ("7", 7)])
def test_chunk_size_from_the_environment(set_env, value, want):
    set_env("DID_CHUNK_SIZE", value)
    assert chunked.chunk_size() == want
