"""The store: atomic writes, chunk round trip and verification, readers' formulas, names, staleness."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pandas as pd
import pytest

from did_core.errors import InputError
from did_core.files import atomic_write_bytes
from did_core.store import CorruptStoreError, ScoreStore, fingerprint
from did_core.synthetic_ws import SyntheticData, make_synthetic_workspace
from did_core.workspace import PAIRS_COLUMNS, TOKENS_COLUMNS, Workspace, default_workspace


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


def test_fingerprint_is_canonical():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint("x", 1) != fingerprint("x", 2)
    assert len(fingerprint("x")) == 20


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_bytes(path, b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(InputError, match="no space left"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]  # no stray temp file


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


def test_pairs_formulas_match_naive_rows(tmp_path):
    beta = 0.3
    run = make_synthetic_workspace(tmp_path, n_pairs=40, n_checkpoints=2, seed=3, beta=beta, chunk_size=16)
    ws = Workspace(tmp_path)
    df = ws.pairs(run)
    assert list(df.columns[:len(PAIRS_COLUMNS)]) == PAIRS_COLUMNS
    assert len(df) == 80 and list(df["model"].unique()) == ["checkpoint-100", "checkpoint-200"]
    manifest = ws.run(run)
    ref = ws.open_store(manifest["reference"]["score"]).read_pairs().set_index("pair_id")
    for cp in manifest["checkpoints"]:
        pol = ws.open_store(cp["score"]).read_pairs().set_index("pair_id")
        for pid in ["0", "17", "39"]:
            lc, lr = pol.loc[pid, "logp_chosen"], pol.loc[pid, "logp_rejected"]
            rc, rr = ref.loc[pid, "logp_chosen"], ref.loc[pid, "logp_rejected"]
            z = beta * ((lc - lr) - (rc - rr))
            row = df[(df["model"] == cp["name"]) & (df["pair_id"] == pid)].iloc[0]
            assert row["step"] == cp["step"]
            assert row["reward_chosen"] == pytest.approx(beta * (lc - rc))
            assert row["reward_rejected"] == pytest.approx(beta * (lr - rr))
            assert row["reward_margin"] == pytest.approx(z)
            assert row["log_margin"] == pytest.approx(lc - lr)
            assert row["ref_log_margin"] == pytest.approx(rc - rr)
            assert row["dpo_loss"] == pytest.approx(-math.log(1 / (1 + math.exp(-z))))
    # stable for huge margins, where a naive -log(sigmoid) overflows or underflows
    assert np.isfinite(df["dpo_loss"]).all()


def test_tokens_join_reference(tmp_path):
    run = make_synthetic_workspace(tmp_path, n_pairs=30, n_checkpoints=1, seed=1, chunk_size=8)
    ws = Workspace(tmp_path)
    toks = ws.tokens(run, "checkpoint-100", ["3", "29"])
    assert list(toks.columns) == TOKENS_COLUMNS and set(toks["pair_id"]) == {"3", "29"}
    np.testing.assert_allclose(toks["log_ratio"], toks["logp"] - toks["ref_logp"], rtol=1e-6)
    pairs = ws.pairs(run).set_index("pair_id")
    ch = toks[(toks["pair_id"] == "3") & (toks["side"] == "chosen")]
    assert ch["logp"].sum() == pytest.approx(pairs.loc["3", "logp_chosen"], abs=1e-4)
    assert ch["ref_logp"].sum() == pytest.approx(pairs.loc["3", "ref_logp_chosen"], abs=1e-4)
    ref_rows = ws.tokens(run, "reference", ["3"])
    assert (ref_rows["log_ratio"] == 0).all()
    with pytest.raises(InputError, match="no model"):
        ws.tokens(run, "checkpoint-999")


def test_dataset_reader_renders_messages(tmp_path):
    ws = Workspace(tmp_path)
    msgs = [{"role": "user", "content": "hi <b>"}]
    df = pd.DataFrame({"pair_id": ["a"], "prompt": [msgs], "chosen": [[{"role": "assistant", "content": "yes"}]],
                       "rejected": [[{"role": "assistant", "content": "no"}]], "score": [1.5]})
    fp = ws.write_dataset(SyntheticData(df, True, "mem", "cd" * 10))
    assert ws.write_dataset(SyntheticData(df, True, "mem", "cd" * 10)) == fp  # idempotent
    ws.write_run({"name": "r", "dataset": {"fingerprint": fp}, "reference": {}, "checkpoints": []})
    shown = ws.dataset("r")
    assert "hi <b>" in shown.loc[0, "prompt"] and "yes" in shown.loc[0, "chosen"]
    assert ws.dataset_records("r").loc[0, "prompt"] == msgs


@pytest.mark.parametrize("bad", ["..", "../../etc", "/etc/passwd", "a/b", "a\\b", ".hidden", "", "x\x00y", " x"])
def test_names_stay_inside_workspace(tmp_path, bad):
    ws = Workspace(tmp_path)
    with pytest.raises(InputError):
        ws.run(bad)
    with pytest.raises(InputError):
        ws.write_run({"name": bad})
    with pytest.raises(InputError):
        ws.open_store(bad)


def test_symlinked_run_outside_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "run.json").write_text(json.dumps({"name": "x"}))
    (tmp_path / "ws" / "runs").mkdir(parents=True)
    (tmp_path / "ws" / "runs" / "evil").symlink_to(outside)
    with pytest.raises(InputError, match="outside"):
        Workspace(tmp_path / "ws").run("evil")


def test_unknown_run_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no run"):
        Workspace(tmp_path).run("nope")
    assert Workspace(tmp_path).run_names() == []


def test_stale_model_detected(tmp_path):
    from did_core.fingerprints import model_fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 100)
    ws = Workspace(tmp_path / "ws")
    entries = []
    for name in ("ref", "pol"):
        fp = fingerprint(name)
        ws.score_store(fp, {"model_fingerprint": model_fingerprint(str(model))})
        entries.append({"name": name, "path": str(model), "score": fp, "step": None})
    ws.write_run({"name": "r", "reference": entries[0], "checkpoints": entries[1:]})
    assert ws.run("r", check_stale=True)["stale"] == {}
    (model / "model.safetensors").write_bytes(b"\1" * 100)
    assert ws.run("r", check_stale=True)["stale"] == {"ref": "changed", "pol": "changed"}
    (model / "model.safetensors").unlink()
    (model / "config.json").unlink()
    model.rmdir()
    assert ws.run("r", check_stale=True)["stale"] == {"ref": "missing", "pol": "missing"}


def test_default_workspace(monkeypatch):
    monkeypatch.delenv("DID_WORKSPACE", raising=False)
    assert str(default_workspace()) == "workspace"
    monkeypatch.setenv("DID_WORKSPACE", "/tmp/elsewhere")
    assert str(default_workspace()) == "/tmp/elsewhere"


@pytest.mark.slow
def test_read_timing_10k_pairs_10_checkpoints(tmp_path):
    t0 = time.perf_counter()
    run = make_synthetic_workspace(tmp_path, n_pairs=10_000, n_checkpoints=10, seed=0, tokens=False, chunk_size=1000)
    t1 = time.perf_counter()
    ws = Workspace(tmp_path)
    df = ws.pairs(run)
    t2 = time.perf_counter()
    assert len(df) == 100_000
    print(f"\nsynthetic 10k x 10 written in {t1 - t0:.2f} s; ws.pairs read in {t2 - t1:.3f} s")
