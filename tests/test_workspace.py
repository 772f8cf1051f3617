"""The workspace: readers' formulas against naive rows, names that stay inside it, staleness, scale."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from did_core.errors import InputError
from did_core.fingerprints import fingerprint
from did_core.losses import DERIVED_COLUMNS, PAIRS_COLUMNS, pair_table
from did_core.manifest import DatasetInfo, ModelEntry, RunManifest
from did_core.synthetic_ws import SyntheticData, make_synthetic_workspace
from did_core.workspace import STORED_PAIRS_COLUMNS, TOKENS_COLUMNS, Workspace, default_workspace


def test_pairs_holds_stored_numbers_only(tmp_path):
    """`ws.pairs` is the stores' numbers joined to the reference, nothing derived: its columns are
    STORED_PAIRS_COLUMNS, none of losses' derived ones, and it does not change with the run's β."""
    run = make_synthetic_workspace(tmp_path, n_pairs=12, n_checkpoints=2, seed=5, beta=0.3, chunk_size=5)
    ws = Workspace(tmp_path)
    df = ws.pairs(run)
    assert list(df.columns) == STORED_PAIRS_COLUMNS
    assert not set(df.columns) & set(DERIVED_COLUMNS) and not any("reward" in c or "loss" in c for c in df.columns)
    manifest = ws.run(run)
    ref = ws.open_store(manifest.reference.score).read_pairs().set_index("pair_id")
    for cp in manifest.checkpoints:
        pol = ws.open_store(cp.score).read_pairs().set_index("pair_id")
        rows = df[df["model"] == cp.name].set_index("pair_id")
        for col in ("logp_chosen", "n_tokens_rejected", "did_entropy_chosen", "top1_prob_rejected"):
            np.testing.assert_array_equal(rows[col].to_numpy(float), pol.loc[rows.index, col].to_numpy(float))
        for col in ("logp_chosen", "logp_rejected", "top1_prob_chosen", "ches", "ches_norm"):
            np.testing.assert_array_equal(rows[f"ref_{col}" if "ches" not in col else col].to_numpy(float),
                                          ref.loc[rows.index, col].to_numpy(float))
    ws.write_run(manifest.replace(beta=0.05, run_settings=None))
    pd.testing.assert_frame_equal(ws.pairs(run), df)


def test_pairs_formulas_match_naive_rows(tmp_path):
    beta = 0.3
    run = make_synthetic_workspace(tmp_path, n_pairs=40, n_checkpoints=2, seed=3, beta=beta, chunk_size=16)
    ws = Workspace(tmp_path)
    df = pair_table(ws.pairs(run), ws.run_settings(ws.run(run)).settings)
    assert list(df.columns[:len(PAIRS_COLUMNS)]) == PAIRS_COLUMNS
    assert len(df) == 80 and list(df["model"].unique()) == ["checkpoint-100", "checkpoint-200"]
    manifest = ws.run(run)
    ref = ws.open_store(manifest.reference.score).read_pairs().set_index("pair_id")
    for cp in manifest.checkpoints:
        pol = ws.open_store(cp.score).read_pairs().set_index("pair_id")
        for pid in ["0", "17", "39"]:
            lc, lr = pol.loc[pid, "logp_chosen"], pol.loc[pid, "logp_rejected"]
            rc, rr = ref.loc[pid, "logp_chosen"], ref.loc[pid, "logp_rejected"]
            z = beta * ((lc - lr) - (rc - rr))
            row = df[(df["model"] == cp.name) & (df["pair_id"] == pid)].iloc[0]
            assert row["step"] == cp.step
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
    ws.write_run(RunManifest.from_json({"name": "r", "dataset": {"fingerprint": fp},
                                        "reference": {"name": "reference", "score": "ab" * 10}, "checkpoints": []}))
    shown = ws.dataset("r")
    assert "hi <b>" in shown.loc[0, "prompt"] and "yes" in shown.loc[0, "chosen"]
    assert ws.dataset_records("r").loc[0, "prompt"] == msgs


@pytest.mark.parametrize("bad", ["..", "../../etc", "/etc/passwd", "a/b", "a\\b", ".hidden", "", "x\x00y", " x"])
def test_names_stay_inside_workspace(tmp_path, bad):
    ws = Workspace(tmp_path)
    with pytest.raises(InputError):
        ws.run(bad)
    with pytest.raises(InputError):
        ws.write_run(RunManifest(bad, DatasetInfo("ab" * 10), ModelEntry("reference", "", None, "ab" * 10, {})))
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
    ws.write_run(RunManifest.from_json({"name": "r", "dataset": {"fingerprint": "ab" * 10}, "reference": entries[0],
                                        "checkpoints": entries[1:]}))
    assert ws.stale_models(ws.run("r")) == {}
    (model / "model.safetensors").write_bytes(b"\1" * 100)
    assert ws.stale_models(ws.run("r")) == {"ref": "changed", "pol": "changed"}
    (model / "model.safetensors").unlink()
    (model / "config.json").unlink()
    model.rmdir()
    assert ws.stale_models(ws.run("r")) == {"ref": "missing", "pol": "missing"}


def test_default_workspace(monkeypatch):
    monkeypatch.delenv("DID_WORKSPACE", raising=False)
    assert str(default_workspace()) == "workspace"
    monkeypatch.setenv("DID_WORKSPACE", "/tmp/elsewhere")
    assert str(default_workspace()) == "/tmp/elsewhere"


@pytest.mark.slow
def test_a_10k_pair_10_checkpoint_read_is_every_chunk_once(tmp_path):
    """At scale (10k pairs x 10 checkpoints, 10 chunks each) `ws.pairs` holds every stored chunk row
    once: each model's log-probs equal its chunk files read one by one with pyarrow, in pair order.
    (How fast that read is: bench/dashboard_bench.py.)"""
    import pyarrow.parquet as pq

    run = make_synthetic_workspace(tmp_path, n_pairs=10_000, n_checkpoints=10, seed=0, tokens=False, chunk_size=1000)
    ws = Workspace(tmp_path)
    df = ws.pairs(run)
    assert len(df) == 100_000 and not df.duplicated(["pair_id", "model"]).any()
    manifest = ws.run(run)
    for entry in manifest.checkpoints:
        store = ws.open_store(Workspace.score_of(manifest, entry))
        raw = pd.concat([pq.read_table(store.chunk_path(c, "pairs")).to_pandas() for c in sorted(store.done_chunks())])
        got = df[df["model"] == entry.name].set_index("pair_id").loc[raw["pair_id"]]
        np.testing.assert_array_equal(got["logp_chosen"].to_numpy(), raw["logp_chosen"].to_numpy())
        np.testing.assert_array_equal(got["logp_rejected"].to_numpy(), raw["logp_rejected"].to_numpy())


def test_a_run_written_then_read_is_the_same_manifest(tmp_path):
    run = make_synthetic_workspace(tmp_path, n_pairs=8, n_checkpoints=2, seed=0, chunk_size=4)
    ws = Workspace(tmp_path)
    m = ws.run(run)
    stored = json.loads((ws.run_dir(run) / "run.json").read_text())
    assert m.to_json() == stored  # the synthetic run lacks the optional keys: they stay absent
    changed = m.replace(name="copy", notes=("a note",), extra=dict(m.extra) | {"pi_l": "checkpoint-100"})
    ws.write_run(changed)
    assert ws.run("copy") == changed and ws.run("copy").extra["pi_l"] == "checkpoint-100"
    assert json.loads((ws.run_dir("copy") / "run.json").read_text()) == stored | {
        "name": "copy", "notes": ["a note"], "extra": stored["extra"] | {"pi_l": "checkpoint-100"}}
    with pytest.raises(TypeError, match="RunManifest"):
        ws.write_run(stored)


def test_a_broken_run_json_is_an_input_error_naming_it(tmp_path):
    ws = Workspace(tmp_path)
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "run.json").write_text(json.dumps({"name": "r", "dataset": {"fingerprint": "d"}}))
    with pytest.raises(InputError, match=r"run\.json: missing reference"):
        ws.run("r")


def _names_by_decoding(path) -> set[str]:
    """The old answer of `Workspace.stored_columns`: decode the whole chunk and look at every value."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    return {c for c in t.column_names
            if t.num_rows == 0 or pc.any(pc.invert(pc.is_nan(t[c]) if pa.types.is_floating(t[c].type)
                                                   else pc.is_null(t[c]))).as_py()}


@pytest.mark.parametrize("extras", [True, False])
def test_stored_names_from_the_footer_equal_a_full_read(tmp_path, extras):
    """`stored_columns` answers from the Parquet footer what decoding the first chunk answered, on stores
    with the CHES / squeezing columns and on stores scored before them (the columns all NaN), for the
    pairs and the tokens files of every store of the run."""
    from did_core.store import ScoreStore
    from did_core.workspace import SQUEEZING_COLUMNS, TOKEN_SQUEEZING

    make_synthetic_workspace(tmp_path, n_pairs=12, n_checkpoints=2, stored_extras=extras, chunk_size=5)
    ws = Workspace(tmp_path)
    stores = [ScoreStore(p) for p in sorted((tmp_path / "scores").iterdir())]
    assert stores
    for store in stores:
        first = min(store.meta()["chunks_done"])
        for kind in ("pairs", "tokens"):
            if not store.chunk_path(first, kind).is_file():
                continue
            names = ws.stored_columns(store, kind)
            assert names == _names_by_decoding(store.chunk_path(first, kind)), (store.dir.name, kind)
            squeezing = set(TOKEN_SQUEEZING if kind == "tokens" else SQUEEZING_COLUMNS)
            assert (squeezing <= names) == extras and not (squeezing & names and not extras)


def test_held_columns_cover_nulls_nan_row_groups_and_empty_files(tmp_path):
    """The footer rule on every case it must tell apart, against decoding: all NaN, all null, NaN and
    null mixed, a value in the last row group only, ±inf, strings with nulls, a nested column, no
    statistics written, and a file with no rows (every column, as before)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from did_core.store import held_columns

    nan, n = float("nan"), 6
    t = pa.table({
        "all_nan": pa.array([nan] * n, pa.float32()),
        "some_nan": pa.array([nan, nan, nan, nan, nan, 1.5]),
        "all_null": pa.nulls(n, pa.float64()),
        "nan_and_null": pa.array([nan, None] * 3, pa.float64()),
        "inf": pa.array([-math.inf] * n),
        "ints": pa.array([None] * 5 + [3], pa.int64()),
        "null_ints": pa.nulls(n, pa.int32()),
        "text": pa.array(["a", None, "b", None, "c", None]),
        "null_text": pa.nulls(n, pa.string()),
        "nested": pa.array([[1.0], None, [], [nan], None, None], pa.list_(pa.float64())),
        "nested_nan": pa.array([[nan]] * n, pa.list_(pa.float64())),
    })
    expect = {"some_nan", "inf", "ints", "text", "nested", "nested_nan"}
    for i, kwargs in enumerate([{}, {"row_group_size": 2}, {"write_statistics": False},
                                {"write_statistics": ["some_nan", "ints"], "row_group_size": 4}]):
        path = tmp_path / f"t{i}.parquet"
        pq.write_table(t, path, **kwargs)
        assert held_columns(path) == _names_by_decoding(path) == expect, kwargs
    empty = tmp_path / "empty.parquet"
    pq.write_table(t.slice(0, 0), empty)
    assert held_columns(empty) == _names_by_decoding(empty) == set(t.column_names)


def test_stored_names_read_no_rows_of_a_new_store_and_check_its_sha256(tmp_path, monkeypatch):
    """On a store with every column, the answer needs the footer alone (no column is decoded); a chunk
    whose bytes no longer match the sha256 in meta.json gives no answer (None: nothing is claimed
    missing; reading its values raises CorruptStoreError), as an unreadable one does."""
    import pyarrow.parquet as pq

    from did_core.store import CorruptStoreError, ScoreStore

    make_synthetic_workspace(tmp_path, n_pairs=12, n_checkpoints=1, chunk_size=5)
    ws = Workspace(tmp_path)
    store = ScoreStore(ws.score_dir(ws.run("synthetic").reference.score))
    full = ws.stored_columns(store, "tokens")
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    assert ws.stored_columns(store, "tokens") == full and ws.stored_columns(store, "pairs")
    monkeypatch.undo()
    path = store.chunk_path(min(store.meta()["chunks_done"]), "tokens")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert ws.stored_columns(store, "tokens") is None
    with pytest.raises(CorruptStoreError):
        store.read_tokens()
    path.write_bytes(b"not parquet")
    assert ws.stored_columns(store, "tokens") is None


def _pairs_as_before(ws: Workspace, name: str, numerics: str | None = None) -> pd.DataFrame:
    """`Workspace.pairs` as it was built before issue 17 (object ids, a per-row lookup of every
    checkpoint's ids in the reference's, one DataFrame from a dict of concatenated columns)."""
    from did_core.store import ScoreStore
    from did_core.workspace import CHES_COLUMNS, SQUEEZING_COLUMNS, STORED_NUMBERS

    def column(t, c):
        return t[c].to_numpy() if c in t.column_names else np.full(t.num_rows, np.nan)

    manifest = ws.run(name)
    numerics = numerics or ws.numerics(manifest)[0]
    rt = ws.open_store(manifest.score_of(manifest.reference, numerics)).read_pairs_table()
    index = pd.Index(rt["pair_id"].to_numpy(zero_copy_only=False))
    refcols = {"ref_logp_chosen": rt["logp_chosen"].to_numpy(), "ref_logp_rejected": rt["logp_rejected"].to_numpy(),
               **{f"ref_{c}": column(rt, c) for c in SQUEEZING_COLUMNS}}
    ches_store = ws.ches_store(manifest, numerics)
    ct = rt if numerics == "exact" else (ches_store.read_pairs_table() if ches_store is not None
                                         and ches_store.exists() else None)
    if ct is None:
        ches_index, ches = index, {c: np.full(len(index), np.nan) for c in CHES_COLUMNS}
    else:
        ches_index, ches = pd.Index(ct["pair_id"].to_numpy(zero_copy_only=False)), {c: column(ct, c) for c in CHES_COLUMNS}
    parts: dict[str, list] = {}
    for cp in manifest.checkpoints:
        store = ScoreStore(ws.score_dir(manifest.score_of(cp, numerics)))
        if not store.exists():
            continue
        t = store.read_pairs_table()
        n, pid = t.num_rows, t["pair_id"].to_numpy(zero_copy_only=False)
        cols = {"pair_id": pid, "model": np.full(n, cp.name, dtype=object),
                "step": np.full(n, np.nan if cp.step is None else cp.step, dtype=float)}
        for c in ("logp_chosen", "logp_rejected", *STORED_NUMBERS):
            cols[c] = t[c].to_numpy()
        for c in SQUEEZING_COLUMNS:
            cols[c] = column(t, c)
        for ix, values in ((index, refcols), (ches_index, ches)):
            pos = ix.get_indexer(pid)
            for c, v in values.items():
                cols[c] = np.where(pos >= 0, v[pos], np.nan) if len(v) else np.full(n, np.nan)
        for c, v in cols.items():
            parts.setdefault(c, []).append(v)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in STORED_PAIRS_COLUMNS})
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    out = pd.DataFrame({k: cols[k] for k in STORED_PAIRS_COLUMNS[:-1]})
    out["pair_id"] = pd.array(cols["pair_id"], dtype="str")
    out["model"] = pd.array(cols["model"], dtype="str")
    out["step"] = pd.array(cols["step"], dtype="Float64").astype("Int64")
    out["numerics"] = numerics
    return out


@pytest.mark.parametrize("extras", [True, False])
def test_pairs_equal_the_construction_before_issue_17(tmp_path, monkeypatch, extras):
    """The Arrow-built `ws.pairs` (ids and model names as "str" straight from Arrow, numbers written
    once into a block, checkpoints stored in the reference's order joined without a lookup) is the
    frame the old construction gives: same columns, dtypes, values, order. Also for a checkpoint
    whose rows are shuffled, lack pairs and hold one the reference lacks (the lookup path), a
    checkpoint without a step, one without a stored score, and none stored at all."""
    import dataclasses
    import shutil

    import pyarrow as pa

    from did_core.store import ScoreStore

    run = make_synthetic_workspace(tmp_path, n_pairs=30, n_checkpoints=4, seed=2, chunk_size=7, tokens=False,
                                   stored_extras=extras)
    ws = Workspace(tmp_path)
    new = ws.pairs(run)
    pd.testing.assert_frame_equal(new, _pairs_as_before(ws, run))
    assert new["pair_id"].dtype == "str" and new["model"].dtype == "str" and new["step"].dtype == "Int64"

    manifest = ws.run(run)
    odd = ws.score_dir(manifest.checkpoints[1].score)
    read = ScoreStore.read_pairs_table

    def shuffled(self):
        t = read(self)
        if self.dir != odd:
            return t
        t = t.take(np.random.default_rng(0).permutation(t.num_rows)[:-5])
        return pa.concat_tables([t, t.slice(0, 1).set_column(0, "pair_id", pa.array(["not-in-ref"]))])

    monkeypatch.setattr(ScoreStore, "read_pairs_table", shuffled)
    cps = list(manifest.checkpoints)
    cps[2] = dataclasses.replace(cps[2], step=None)
    ws.write_run(dataclasses.replace(manifest, checkpoints=cps))
    shutil.rmtree(ws.score_dir(cps[3].score))
    new = ws.pairs(run)
    pd.testing.assert_frame_equal(new, _pairs_as_before(ws, run))
    assert new["ref_logp_chosen"].isna().sum() == 1 and new["step"].isna().sum() == 30
    for cp in cps[:3]:
        shutil.rmtree(ws.score_dir(cp.score))
    pd.testing.assert_frame_equal(ws.pairs(run), _pairs_as_before(ws, run))


def test_dataset_rows_of_some_pairs_read_only_their_row_groups(tmp_path, monkeypatch):
    """A stored dataset is written in row groups of `_DATASET_ROW_GROUP` rows; `dataset_table(fp,
    pair_ids)` is the whole table's rows of those pairs (file order, unknown ids skipped, the same
    metadata), decoding only the groups that hold them. A file written before (one row group) gives
    the same answers, whole and by pair."""
    import pyarrow.parquet as pq

    from did_core import workspace as wsmod
    from did_core.files import atomic_write_bytes
    from did_core.store import table_to_parquet_bytes

    run = make_synthetic_workspace(tmp_path, n_pairs=3000, n_checkpoints=1, seed=4, tokens=False)
    ws = Workspace(tmp_path)
    fp = ws.run(run).dataset.fingerprint
    path = ws.dataset_path(fp)
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-3000 // wsmod._DATASET_ROW_GROUP) > 1
    whole, info = ws.dataset_table(fp)
    assert info["n_pairs"] == 3000 and len(whole) == 3000
    read_groups = []
    original = pq.ParquetFile.read_row_groups

    def spy(self, groups, *args, **kwargs):
        read_groups.append(list(groups))
        return original(self, groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    cases = [["2999", "5", "nope", "1500"], ["17"], [], ["nope"], list(whole["pair_id"])]
    for layout in ("groups", "one group"):
        if layout == "one group":  # what the writer made before: one row group
            atomic_write_bytes(path, table_to_parquet_bytes(pq.read_table(path)))
            assert pq.ParquetFile(path).metadata.num_row_groups == 1
            again, again_info = ws.dataset_table(fp)
            pd.testing.assert_frame_equal(again, whole)
            assert again_info == info
        for ids in cases:
            read_groups.clear()
            got, got_info = ws.dataset_table(fp, pair_ids=ids)
            expected = whole[whole["pair_id"].isin(ids)].reset_index(drop=True)
            pd.testing.assert_frame_equal(got, expected, check_index_type=False)
            assert got_info == info
            if layout == "groups" and ids == ["17"]:
                assert read_groups == [[0]]
            if layout == "groups" and ids[:1] == ["2999"]:
                assert read_groups == [[0, 1, 2]]
    with pytest.raises(InputError):
        ws.dataset_table("0" * 20, pair_ids=["1"])
