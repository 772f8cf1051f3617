"""The scoring engine against a deliberately naive scorer (tests/naive.py) on tiny random models."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from naive import naive_did_entropy, naive_logp_sum, naive_token_logps

from did_core import engine
from did_core.engine import PairScores, score_batch_models
from did_core.tiny import tiny_gpt2, tiny_llama
from did_core.tokenization import TokenizedPair

TOL = 1e-4  # nats per sequence


def Pair(pair_id: str, prompt_ids: tuple[int, ...], chosen_ids: tuple[int, ...], rejected_ids: tuple[int, ...],
         chosen_dropped: int = 0, rejected_dropped: int = 0) -> TokenizedPair:  # noqa: N802 - reads as a type
    """The real TokenizedPair, with nothing truncated unless said."""
    return TokenizedPair(pair_id, prompt_ids, chosen_ids, rejected_ids, chosen_dropped, rejected_dropped)


def make_pairs(tokenizer, n_random: int = 14, seed: int = 0) -> list[TokenizedPair]:
    """Text pairs through the local tokenizer, plus random-length edge cases."""
    enc = tokenizer.encode
    eos = tokenizer.eos_token_id
    texts = [("\n\nHuman: what is the capital?\n\nAssistant:", " Paris, the city.", " abcabc the the."),
             ("the", " ab", "c"),  # short, and BPE merges inside
             ("Q", " a long answer that goes on and on for a while.", " no")]
    pairs = [Pair(f"t{i}", tuple(enc(p)), tuple(enc(c)) + (eos,), tuple(enc(r)) + (eos,))
             for i, (p, c, r) in enumerate(texts)]
    rng = random.Random(seed)
    v = len(tokenizer)
    for i in range(n_random):
        def ids(lo: int, hi: int) -> tuple[int, ...]:
            return tuple(rng.randrange(v) for _ in range(rng.randint(lo, hi)))
        pairs.append(Pair(f"r{i}", ids(1, 24), ids(1, 14), ids(1, 14)))
    pairs.append(Pair("p1", (5,), (7, 8, 9), (10,)))  # a prompt of length 1
    pairs.append(Pair("empty", ids(30, 30), (), (), 4, 6))  # fully truncated: nothing to score
    pairs.append(Pair("half", ids(5, 5), (11, 12), ()))  # one side truncated away
    return pairs


@pytest.fixture(scope="module")
def models():
    from did_core.tiny import build_tokenizer

    tok = build_tokenizer(merges=[("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")])
    v = len(tok)
    return {"tok": tok,
            "gpt2": (tiny_gpt2(v, seed=0), tiny_gpt2(v, seed=1), tiny_gpt2(v, seed=2)),
            "llama": (tiny_llama(v, seed=0), tiny_llama(v, seed=1), tiny_llama(v, seed=2))}


def check_against_naive(model, pairs, scores: list[PairScores], tol: float = TOL) -> None:
    for p, s in zip(pairs, scores, strict=True):
        for side in ("chosen", "rejected"):
            ids, got = getattr(p, f"{side}_ids"), getattr(s, side)
            assert got.n_tokens == len(ids) and got.token_logps.dtype == np.float32
            want = naive_token_logps(model, p.prompt_ids, ids)
            np.testing.assert_allclose(got.token_logps, want, atol=tol, rtol=0)
            assert abs(got.logp_sum - naive_logp_sum(model, p.prompt_ids, ids)) <= tol, (p.pair_id, side)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("budget", [1, 120, 100_000])
def test_parity_with_naive_loop(models, arch, budget):
    ref, pol, _ = models[arch]
    pairs = make_pairs(models["tok"])
    random.Random(budget).shuffle(pairs)
    seen = []
    ref_s, pol_s = score_batch_models(ref, [pol], pairs, token_level=False, score_reference=True,
                                      token_budget=budget, device="cpu", dtype=torch.float32, progress=seen.append)
    assert engine.strategy_of(ref) == engine.Strategy("tree", head_only=True)
    check_against_naive(ref, pairs, ref_s)
    check_against_naive(pol, pairs, pol_s[0])
    assert pol_s[0][0].chosen.did_entropy is None
    assert seen == sorted(seen) and seen[-1] == len(pairs)
    if budget == 1:
        assert len(seen) == len(pairs) - 1  # one batch per pair; the fully truncated one needs none
    empty = next(s for p, s in zip(pairs, pol_s[0]) if p.pair_id == "empty")
    assert empty.chosen.n_tokens == 0 and empty.rejected.logp_sum == 0.0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_token_level_entropy_equals_brute_force(models, arch):
    ref, pol, _ = models[arch]
    pairs = make_pairs(models["tok"], n_random=3)
    _, (pol_s,) = score_batch_models(ref, [pol], pairs, token_level=True, score_reference=False,
                                     token_budget=200, device="cpu", dtype=torch.float32)
    for p, s in zip(pairs, pol_s):
        for side in ("chosen", "rejected"):
            got = getattr(s, side).did_entropy
            want = naive_did_entropy(pol, ref, p.prompt_ids, getattr(p, f"{side}_ids"))
            assert got is not None and got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
            assert np.all(got >= 0) and np.all(got <= math.log(len(models["tok"])) + 1e-6)


def test_scores_do_not_depend_on_batching_or_order(models):
    ref, pol, pol2 = models["llama"]
    pairs = make_pairs(models["tok"])
    runs = []
    for budget, seed in [(1, 0), (64, 1), (10_000, 2)]:
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        r, ps = score_batch_models(ref, [pol, pol2], [pairs[i] for i in order], token_level=True,
                                   score_reference=True, token_budget=budget, device="cpu", dtype="float32")
        back = {i: k for k, i in enumerate(order)}
        runs.append([(r[back[i]], ps[0][back[i]], ps[1][back[i]]) for i in range(len(pairs))])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            for sa, sb in zip(a, b):
                for side in ("chosen", "rejected"):
                    x, y = getattr(sa, side), getattr(sb, side)
                    assert abs(x.logp_sum - y.logp_sum) <= 1e-5
                    np.testing.assert_allclose(x.token_logps, y.token_logps, atol=1e-5)
                    if x.did_entropy is not None:
                        np.testing.assert_allclose(x.did_entropy, y.did_entropy, atol=1e-5)
    # Two policies in one call give what each gives alone (the reference is shared, not mixed up).
    _, (alone,) = score_batch_models(ref, [pol2], pairs, token_level=True, score_reference=False,
                                     token_budget=64, device="cpu", dtype=torch.float32)
    for (_, _, both), one in zip(runs[1], alone):
        np.testing.assert_allclose(both.chosen.did_entropy, one.chosen.did_entropy, atol=1e-5)


@pytest.mark.parametrize("strategy", [("tree", False), ("repeat", True), ("repeat", False), ("full", True), ("full", False)])
def test_fallback_paths_match_naive(models, strategy):
    """Every path the probe may choose gives the naive numbers (forced here on fresh models)."""
    v = len(models["tok"])
    ref, pol = tiny_gpt2(v, seed=3), tiny_llama(v, seed=4)
    for m in (ref, pol):
        engine.force_strategy(m, engine.Strategy(*strategy))
    pairs = make_pairs(models["tok"], n_random=6)
    r, (p,) = score_batch_models(ref, [pol], pairs, token_level=False, score_reference=True, token_budget=90,
                                 device="cpu", dtype=torch.float32)
    check_against_naive(ref, pairs, r)
    check_against_naive(pol, pairs, p)


def test_probe_refuses_paths_that_would_change_numbers(models):
    """Gemma-2 soft-caps its logits and uses a sliding window: full forwards, its own logits."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=len(models["tok"]), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                       final_logit_softcapping=0.5, eos_token_id=1, bos_token_id=1, pad_token_id=0)
    model = Gemma2ForCausalLM(cfg).eval()
    pairs = make_pairs(models["tok"], n_random=3)
    r, _ = score_batch_models(model, [], pairs, token_level=False, score_reference=True, token_budget=80,
                              device="cpu", dtype=torch.float32)
    assert engine.strategy_of(model) == engine.Strategy("full", head_only=False)
    check_against_naive(model, pairs, r)


def test_probe_notices_a_model_that_ignores_4d_masks(models):
    """Some attention kernels drop custom masks; the probe must then leave the tree layout."""
    import functools

    model = tiny_llama(len(models["tok"]), seed=5)
    inner = model.model.forward

    @functools.wraps(inner)
    def no_4d(*args, attention_mask=None, **kwargs):
        return inner(*args, attention_mask=None if attention_mask is not None and attention_mask.ndim == 4
                     else attention_mask, **kwargs)

    model.model.forward = no_4d
    pairs = make_pairs(models["tok"], n_random=3)
    r, _ = score_batch_models(model, [], pairs, token_level=False, score_reference=True, token_budget=80,
                              device="cpu", dtype=torch.float32)
    assert engine.strategy_of(model) == engine.Strategy("repeat", head_only=True)
    check_against_naive(model, pairs, r)


def test_identical_models_give_uniform_did(models):
    ref = models["gpt2"][0]
    pairs = make_pairs(models["tok"], n_random=2)
    _, (s,) = score_batch_models(ref, [ref], pairs, token_level=True, score_reference=False, token_budget=500,
                                 device="cpu", dtype=torch.float32)
    log_v = math.log(len(models["tok"]))
    for ps in s:
        np.testing.assert_allclose(ps.chosen.did_entropy, log_v, atol=1e-5)


def test_reference_not_run_when_not_needed(models):
    class Exploding(torch.nn.Module):
        def __getattr__(self, name):
            raise AssertionError(f"reference touched: {name}")

    pol = models["gpt2"][1]
    pairs = make_pairs(models["tok"], n_random=2)
    r, (s,) = score_batch_models(Exploding(), [pol], pairs, token_level=False, score_reference=False,
                                 token_budget=100, device="cpu", dtype=torch.float32)
    assert r is None and len(s) == len(pairs)


def test_out_of_memory_halves_budget_and_retries(models, monkeypatch):
    ref, pol, _ = models["gpt2"]
    pairs = make_pairs(models["tok"], n_random=8)
    want_r, (want_p,) = score_batch_models(ref, [pol], pairs, token_level=True, score_reference=True,
                                           token_budget=100_000, device="cpu", dtype=torch.float32)
    real, sizes = engine.score_one_batch, []

    def flaky(reference, policies, batch, **kw):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(reference, policies, batch, **kw)

    monkeypatch.setattr(engine, "score_one_batch", flaky)
    seen = []
    got_r, (got_p,) = score_batch_models(ref, [pol], pairs, token_level=True, score_reference=True,
                                         token_budget=100_000, device="cpu", dtype=torch.float32,
                                         progress=seen.append)
    assert sizes[0] > 3 and max(sizes[-3:]) <= 3 and seen[-1] == len(pairs)
    for a, b in zip(want_p + want_r, got_p + got_r):
        assert abs(a.chosen.logp_sum - b.chosen.logp_sum) <= 1e-5
    monkeypatch.setattr(engine, "score_one_batch", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):
        score_batch_models(ref, [pol], pairs, token_level=False, score_reference=True, token_budget=50,
                           device="cpu", dtype=torch.float32)


def test_empty_prompt_is_refused(models):
    ref, pol, _ = models["gpt2"]
    with pytest.raises(ValueError, match="empty prompt"):
        score_batch_models(ref, [pol], [Pair("x", (), (3,), (4,))], token_level=False, score_reference=True,
                           token_budget=100, device="cpu", dtype=torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_parity(models):
    ref, pol, _ = (m for m in models["llama"])
    v = len(models["tok"])
    ref_c, pol_c = tiny_llama(v, seed=0).cuda(), tiny_llama(v, seed=1).cuda()
    pairs = make_pairs(models["tok"], n_random=6)
    r, (p,) = score_batch_models(ref_c, [pol_c], pairs, token_level=True, score_reference=True, token_budget=128,
                                 device="cuda", dtype=torch.float32)
    check_against_naive(ref, pairs, r, tol=1e-3)
    check_against_naive(pol, pairs, p, tol=1e-3)
