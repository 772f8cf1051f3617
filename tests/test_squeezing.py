"""Squeezing (Ren & Sutherland, ICLR 2025): the top-1 probability and next-token entropy the engine
takes from its head chunks equal a naive softmax over the full logits, per token (in memory, in the
tokens rows and as `ws.tokens` reads them back) and as the stored per-response means; a store from
before the per-token columns says so."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from did_core import engine
from did_core.ches import head_stats
from did_core.chunked import chunk_frames
from did_core.engine import score_batch_models
from did_core.tiny import build_tokenizer, tiny_gpt2, tiny_llama
from did_core.tokenization import TokenizedPair


@torch.no_grad()
def naive_squeezing(model, prompt_ids, completion_ids) -> tuple[list[float], list[float]]:
    """Per completion token: max_v p(v) and −Σ_v p(v) log p(v), a full forward and a float64 softmax."""
    if not completion_ids:
        return [], []
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    p = torch.softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # (L, V)
    tops, ents = [], []
    for t in range(len(completion_ids)):
        row = p[len(prompt_ids) - 1 + t]
        tops.append(float(row.max()))
        ents.append(float(-(row[row > 0] * row[row > 0].log()).sum()))
    return tops, ents


def _pairs(vocab: int) -> list[TokenizedPair]:
    rng = np.random.default_rng(0)

    def ids(lo, hi):
        return tuple(int(x) for x in rng.integers(0, vocab, rng.integers(lo, hi + 1)))
    pairs = [TokenizedPair(f"r{i}", ids(1, 12), ids(1, 10), ids(1, 10), 0, 0) for i in range(9)]
    pairs.append(TokenizedPair("half", ids(4, 4), (7, 8), (), 0, 3))  # one side cut away by max_length
    pairs.append(TokenizedPair("empty", ids(6, 6), (), (), 2, 2))  # both cut: nothing to score
    return pairs


@pytest.mark.parametrize("strategy", [None, ("repeat", True), ("full", False)])
def test_top1_and_entropy_equal_naive_softmax(strategy):
    tok = build_tokenizer()
    v = len(tok)
    ref, pol = tiny_gpt2(v, seed=1), tiny_llama(v, seed=2)
    if strategy is not None:
        for m in (ref, pol):
            engine.force_strategy(m, engine.Strategy(*strategy))
    pairs = _pairs(v)
    r, (p,) = score_batch_models(ref, [pol], pairs, token_level=True, score_reference=True, token_budget=50,
                                 device="cpu", dtype=torch.float32)
    for model, scores in ((ref, r), (pol, p)):
        pairs_df, tokens_df = chunk_frames(pairs, scores, {i: str(i) for i in range(v)}, with_entropy=True)
        assert tokens_df["top1_prob"].dtype == np.float32 and tokens_df["token_entropy"].dtype == np.float32
        for pair, s, (_, row) in zip(pairs, scores, pairs_df.iterrows(), strict=True):
            for side in ("chosen", "rejected"):
                ids = getattr(pair, f"{side}_ids")
                want_top, want_ent = naive_squeezing(model, pair.prompt_ids, ids)
                got = getattr(s, side)
                assert got.top1_prob.dtype == np.float32 and len(got.top1_prob) == len(ids)
                np.testing.assert_allclose(got.top1_prob, want_top, atol=1e-5, rtol=0)
                np.testing.assert_allclose(got.token_entropy, want_ent, atol=1e-5, rtol=0)
                rows = tokens_df[(tokens_df["pair_id"] == pair.pair_id) & (tokens_df["side"] == side)]
                assert list(rows["position"]) == list(range(len(ids)))  # the tokens rows, position by position
                np.testing.assert_allclose(rows["top1_prob"], want_top, atol=1e-5, rtol=0)
                np.testing.assert_allclose(rows["token_entropy"], want_ent, atol=1e-5, rtol=0)
                if ids:  # the stored per-response means
                    assert row[f"top1_prob_{side}"] == pytest.approx(np.mean(want_top), abs=1e-5)
                    assert row[f"token_entropy_{side}"] == pytest.approx(np.mean(want_ent), abs=1e-5)
                else:
                    assert math.isnan(row[f"top1_prob_{side}"]) and math.isnan(row[f"token_entropy_{side}"])


def test_head_stats_rows_and_impossible_tokens():
    z = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, -math.inf, -math.inf], [1.0, 2.0, 3.0, 4.0]])
    logp, top, ent = head_stats(z, torch.tensor([0, 0, 3]))
    p = torch.softmax(z.double(), -1)
    want_ent = [float(-(r[r > 0] * r[r > 0].log()).sum()) for r in p]
    np.testing.assert_allclose(top.numpy(), p.max(-1).values.numpy(), atol=1e-7)
    np.testing.assert_allclose(ent.numpy(), want_ent, atol=1e-6)
    np.testing.assert_allclose(logp.numpy(), torch.log_softmax(z.double(), -1)[[0, 1, 2], [0, 0, 3]].numpy(), atol=1e-6)
    assert ent[0] == pytest.approx(math.log(4)) and top[0] == pytest.approx(0.25)


def test_head_chunks_bound_memory():
    """Several head chunks per batch give the same numbers as one: a vocabulary wide enough that one head
    call (engine.CHUNK_BYTES of float32 logits) holds 40 rows, scored in one batch (several chunks) and
    one pair per batch (each pair's rows in one chunk)."""
    tok = build_tokenizer()
    rows_per_chunk = 40
    v = engine.CHUNK_BYTES // 4 // rows_per_chunk
    ref = tiny_gpt2(v, seed=3)
    pairs = _pairs(len(tok))
    assert max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs) < rows_per_chunk
    assert sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs) > 2 * rows_per_chunk
    one, _ = score_batch_models(ref, [], pairs, token_level=False, score_reference=True, token_budget=1,
                                device="cpu", dtype=torch.float32)
    many, _ = score_batch_models(ref, [], pairs, token_level=False, score_reference=True, token_budget=100_000,
                                 device="cpu", dtype=torch.float32)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a.chosen.top1_prob, b.chosen.top1_prob, atol=1e-7)
        np.testing.assert_allclose(a.rejected.token_entropy, b.rejected.token_entropy, atol=1e-6)


def test_scored_run_stores_per_token_squeezing_equal_to_naive(tmp_path):
    """`run_score` end to end (exact numerics): `ws.tokens` of a checkpoint gives its own per-token top-1
    probability and entropy and the reference's beside them, each equal to a naive float64 softmax over
    that model's full logits, and nothing is reported missing."""
    from cli_world import build_world
    from transformers import AutoModelForCausalLM

    from did_core.data import load_preference_data
    from did_core.score import run_score
    from did_core.tokenization import tokenize_pairs
    from did_core.workspace import Workspace

    w = build_world(tmp_path, n_pairs=6, steps=(2,))
    stats = run_score(str(w["data"]), str(w["ref"]), run_dir=str(w["run"]), workspace=tmp_path / "ws",
                      numerics="exact")
    ws = Workspace(tmp_path / "ws")
    assert ws.tokens_not_stored(stats.run, "checkpoint-2") == {}
    toks = ws.tokens(stats.run, "checkpoint-2")
    models = {"": AutoModelForCausalLM.from_pretrained(w["run"] / "checkpoint-2"),
              "ref_": AutoModelForCausalLM.from_pretrained(w["ref"])}
    pairs = tokenize_pairs(load_preference_data(str(w["data"])), w["tokenizer"], 1024)
    checked = 0
    for pair in pairs:
        for side in ("chosen", "rejected"):
            ids = getattr(pair, f"{side}_ids")
            rows = toks[(toks["pair_id"] == pair.pair_id) & (toks["side"] == side)].sort_values("position")
            assert list(rows["token_id"]) == list(ids)
            for prefix, model in models.items():
                want_top, want_ent = naive_squeezing(model.eval(), pair.prompt_ids, ids)
                np.testing.assert_allclose(rows[f"{prefix}top1_prob"], want_top, atol=1e-5, rtol=0)
                np.testing.assert_allclose(rows[f"{prefix}token_entropy"], want_ent, atol=1e-5, rtol=0)
                checked += len(ids)
    assert checked > 40
    ref_toks = ws.tokens(stats.run, ws.run(stats.run).reference.name)
    np.testing.assert_array_equal(ref_toks["top1_prob"], ref_toks["ref_top1_prob"])


def test_a_store_from_before_per_token_squeezing_is_reported(tmp_path, capsys):
    """Old stores: the tokens rows lack the columns (here NaN, as the schema fills them); `tokens_not_stored`
    names each for the checkpoint and the reference with the rescore hint, never a silent NaN; the key
    that makes such a store rescore instead of resume is in the exact fingerprint fields."""
    from did_core import chunked
    from did_core.config import ScoreSettings
    from did_core.run_settings import RunSettings
    from did_core.synthetic_ws import make_synthetic_workspace
    from did_core.workspace import TOKEN_SQUEEZING_COLUMNS, Workspace

    make_synthetic_workspace(tmp_path / "old", n_pairs=10, n_checkpoints=1, stored_extras=False)
    make_synthetic_workspace(tmp_path / "new", n_pairs=10, n_checkpoints=1)
    old, new = Workspace(tmp_path / "old"), Workspace(tmp_path / "new")
    gone = old.tokens_not_stored("synthetic", "checkpoint-100")
    assert set(gone) == set(TOKEN_SQUEEZING_COLUMNS)
    assert all("per-token squeezing" in why and "score the run again" in why for why in gone.values())
    assert old.tokens("synthetic", "checkpoint-100")["top1_prob"].isna().all()
    assert new.tokens_not_stored("synthetic", "checkpoint-100") == {}
    assert new.tokens("synthetic", "checkpoint-100")[list(TOKEN_SQUEEZING_COLUMNS)].notna().all().all()
    fields = chunked.score_fields(ScoreSettings(), RunSettings(), 128, "cpu")
    assert "token-squeezing" in fields["exact"]["stored"] and "stored" not in fields["trainer"]
    # the tokens export says so too: in its metadata and as a CLI note, and nothing for a new store
    import json

    from did_core.__main__ import main
    from did_core.export import export

    export(tmp_path / "old", tmp_path / "t.csv", kind="tokens")
    meta = json.loads((tmp_path / "t.csv.meta.json").read_text())
    assert meta["runs"]["synthetic"]["tokens_not_stored"]["exact"] == gone
    assert main(["export", "--workspace", str(tmp_path / "old"), "--kind", "tokens",
                 "--out", str(tmp_path / "u.csv")]) == 0
    err = capsys.readouterr().err
    assert "note: run synthetic (exact numerics): top1_prob, token_entropy, ref_top1_prob" in err, err
    assert main(["export", "--workspace", str(tmp_path / "new"), "--kind", "tokens",
                 "--out", str(tmp_path / "v.csv")]) == 0
    assert "note:" not in capsys.readouterr().err
