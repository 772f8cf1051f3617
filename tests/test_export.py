"""`export`: each format, docs/REFERENCE.md §7 columns in order, tokens rows, several runs, TRL reference dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from did_core.errors import InputError
from did_core.export import export, export_trl_reference
from did_core.fingerprints import fingerprint
from did_core.losses import PAIRS_COLUMNS, VIEW_COLUMNS, pair_table
from did_core.manifest import RunManifest
from did_core.synthetic_ws import SyntheticData, make_synthetic_workspace
from did_core.workspace import TOKENS_COLUMNS, Workspace


def _read(path) -> pd.DataFrame:
    path = str(path)
    if path.endswith(".csv"):
        return pd.read_csv(path, dtype={"pair_id": str})
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True, dtype={"pair_id": str})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    make_synthetic_workspace(root, n_pairs=25, n_checkpoints=2, seed=4, chunk_size=10)
    return root


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_pairs_export_each_format(synthetic, tmp_path, ext):
    out = export(synthetic, tmp_path / f"pairs.{ext}", kind="pairs")
    got = _read(out)
    assert list(got.columns[:len(PAIRS_COLUMNS)]) == PAIRS_COLUMNS and got.columns[-1] == "run"
    ws = Workspace(synthetic)
    want = pair_table(ws.pairs("synthetic"), ws.run_settings(ws.run("synthetic")).settings)
    assert list(got.columns) == [*(c for c in want.columns if c not in VIEW_COLUMNS), "run"]
    assert len(got) == len(want) == 50
    assert list(got["pair_id"].astype(str)) == list(want["pair_id"])
    for col in ("logp_chosen", "ref_logp_rejected", "dpo_loss", "did_entropy_chosen"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-12)
    assert list(got["step"]) == [100] * 25 + [200] * 25


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_tokens_export(synthetic, tmp_path, ext):
    got = _read(export(synthetic, tmp_path / f"tokens.{ext}", kind="tokens"))
    assert list(got.columns) == [*TOKENS_COLUMNS, "numerics", "run"]
    pairs = Workspace(synthetic).pairs("synthetic")
    assert len(got) == int(pairs["n_tokens_chosen"].sum() + pairs["n_tokens_rejected"].sum())
    np.testing.assert_allclose(got["log_ratio"], got["logp"] - got["ref_logp"], atol=1e-5)
    sums = got[got["model"] == "checkpoint-200"].groupby(["pair_id", "side"])["logp"].sum()
    cp = pairs[pairs["model"] == "checkpoint-200"].set_index("pair_id")
    assert sums[("7", "rejected")] == pytest.approx(cp.loc["7", "logp_rejected"], abs=1e-4)


def test_unknown_extension_and_kind(synthetic, tmp_path):
    with pytest.raises(InputError, match="unknown export format"):
        export(synthetic, tmp_path / "out.xlsx")
    with pytest.raises(InputError, match="unknown export kind"):
        export(synthetic, tmp_path / "out.csv", kind="nope")
    with pytest.raises(InputError, match="no run"):
        export(synthetic, tmp_path / "out.csv", run="missing")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no scored runs"):
        export(tmp_path / "empty", tmp_path / "out.csv")


def test_several_runs(tmp_path):
    make_synthetic_workspace(tmp_path, n_pairs=5, n_checkpoints=1, seed=0, run_name="a")
    make_synthetic_workspace(tmp_path, n_pairs=5, n_checkpoints=2, seed=0, run_name="b")
    got = _read(export(tmp_path, tmp_path / "all.csv"))
    assert got.groupby("run").size().to_dict() == {"a": 5, "b": 10}
    assert set(_read(export(tmp_path, tmp_path / "b.csv", run="b"))["run"]) == {"b"}
    with pytest.raises(InputError, match="--run"):
        export_trl_reference(tmp_path, None, tmp_path / "trl.jsonl")


def _conversational_ws(root) -> Workspace:
    """A hand-made run on conversational data whose checkpoint has no token-level entropy."""
    ws = Workspace(root)
    df = pd.DataFrame({
        "pair_id": ["x", "y"],
        "prompt": [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "2+2?"}]],
        "chosen": [[{"role": "assistant", "content": "hello"}], [{"role": "assistant", "content": "4"}]],
        "rejected": [[{"role": "assistant", "content": "go"}], [{"role": "assistant", "content": "5"}]],
    })
    data_fp = ws.write_dataset(SyntheticData(df, True, "mem", fingerprint("conv")))
    entries = []
    for name, lc, lr in (("ref", [-3.0, -1.5], [-4.0, -2.5]), ("checkpoint-1", [-2.0, -1.0], [-6.0, -3.0])):
        fp = fingerprint(name)
        store = ws.score_store(fp, {"n_pairs": 2, "chunk_size": 2})
        store.write_chunk(0, pd.DataFrame({"pair_id": ["x", "y"], "logp_chosen": lc, "logp_rejected": lr,
                                           "n_tokens_chosen": [2, 1], "n_tokens_rejected": [2, 1],
                                           "dropped_chosen": 0, "dropped_rejected": 0}), None)
        store.mark_complete()
        entries.append({"name": name, "path": name, "step": 1 if name != "ref" else None, "score": fp})
    ws.write_run(RunManifest.from_json({"name": "conv", "dataset": {"fingerprint": data_fp, "conversational": True},
                                        "beta": 0.1, "reference": entries[0], "checkpoints": entries[1:]}))
    return ws


def test_entropy_empty_when_not_computed(tmp_path):
    _conversational_ws(tmp_path)
    text = (tmp_path / "p.csv")
    export(tmp_path, text)
    header, first = text.read_text().splitlines()[:2]
    assert header.split(",")[:len(PAIRS_COLUMNS)] == PAIRS_COLUMNS
    assert first.split(",")[15:17] == ["", ""]  # did_entropy_chosen, did_entropy_rejected
    row = json.loads(open(export(tmp_path, tmp_path / "p.jsonl")).readline())
    assert row["did_entropy_chosen"] is None and row["log_margin"] == 4.0 and row["ref_log_margin"] == 1.0
    assert row["dpo_loss"] == pytest.approx(np.logaddexp(0, -0.1 * 3.0))


def test_trl_reference_dataset(tmp_path):
    _conversational_ws(tmp_path)
    got = [json.loads(line) for line in open(export_trl_reference(tmp_path, "conv", tmp_path / "trl.jsonl"))]
    assert list(got[0])[:5] == ["prompt", "chosen", "rejected", "ref_chosen_logps", "ref_rejected_logps"]
    assert got[0]["prompt"] == [{"role": "user", "content": "hi"}]  # message lists stay message lists
    assert [(r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in got] == [(-3.0, -4.0), (-1.5, -2.5)]
    pq_df = pd.read_parquet(export_trl_reference(tmp_path, None, tmp_path / "trl.parquet"))
    assert pq_df["ref_chosen_logps"].dtype == np.float64 and len(pq_df) == 2


def test_trl_collator_consumes_the_columns(tmp_path):
    """TRL 1.16's preference collator batches our columns into the tensors its loss reads."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    _conversational_ws(tmp_path)
    rows = pd.read_parquet(export_trl_reference(tmp_path, "conv", tmp_path / "trl.parquet"))
    examples = [{"prompt_ids": [5, 6], "chosen_ids": [7, 1], "rejected_ids": [8, 1],
                 "ref_chosen_logps": r.ref_chosen_logps, "ref_rejected_logps": r.ref_rejected_logps}
                for r in rows.itertuples()]
    batch = DataCollatorForPreference(pad_token_id=0)(examples)
    assert batch["ref_chosen_logps"].tolist() == [-3.0, -1.5]
    assert batch["ref_rejected_logps"].tolist() == [-4.0, -2.5]
