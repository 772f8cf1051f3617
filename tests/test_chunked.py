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


def test_a_dropped_model_is_collected_only_when_a_cycle_keeps_it(monkeypatch):
    """`_free` frees what reference counting could not (a model in a cycle) and skips the full
    collection, which costs ~0.3 s in a process with torch imported, when the model is already gone."""
    import gc
    import weakref

    from torch import nn

    calls = []
    real = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or real(*a))
    plain = nn.Linear(2, 2)
    dropped = weakref.ref(plain)
    del plain
    chunked._free("cpu", dropped)
    assert dropped() is None and calls == []

    cyclic = nn.Linear(2, 2)
    cyclic.loop = [cyclic]  # a plain attribute: the module refers to itself through the list
    dropped = weakref.ref(cyclic)
    del cyclic
    assert dropped() is not None  # reference counting alone cannot free it
    chunked._free("cpu", dropped)
    assert dropped() is None and len(calls) == 1
    chunked._free("cpu", None)  # the reference's turn: no model was loaded
    assert len(calls) == 1
