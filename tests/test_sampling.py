"""Sampling on a finite world whose every response can be enumerated (tiny random GPT-2s).

World: vocabulary {0, 2, 3} + EOS (id 1), prompt (2, 3, 0), responses end at the first EOS or are cut
after 4 tokens — exactly the sampler's support, so Σ_y π(y) = 1 over the enumeration.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from did_core.entropy import exact_did_entropy, snis_entropy, summarize_samples
from did_core.sampling import (
    enumerate_responses,
    sample_did_entropy,
    sample_responses,
    sampler_log_probs,
    score_responses,
)
from did_core.tiny import tiny_gpt2

EOS, VOCAB, MAX_NEW, PROMPT = 1, 4, 4, (2, 3, 0)


def _model(seed: int, sharpness: float) -> torch.nn.Module:
    m = tiny_gpt2(VOCAB, n_layer=1, n_embd=16, n_head=2, n_positions=16, seed=seed)
    with torch.no_grad():
        m.transformer.ln_f.weight.mul_(sharpness)  # sharper next-token distributions → a DID far from uniform
    return m


@pytest.fixture(scope="module")
def world():
    policy, reference = _model(0, 12.0), _model(1, 4.0)
    support = enumerate_responses(VOCAB, EOS, MAX_NEW)
    lp_pol = score_responses(policy, PROMPT, support, batch_size=256)
    lp_ref = score_responses(reference, PROMPT, support, batch_size=256)
    return dict(policy=policy, reference=reference, support=support, lp_pol=lp_pol, lp_ref=lp_ref,
                index={y: i for i, y in enumerate(support)}, exact=exact_did_entropy(lp_pol - lp_ref))


def test_enumeration_is_the_support(world):
    assert len(world["support"]) == 1 + 3 + 9 + 27 + 81 == len(set(world["support"]))
    assert np.exp(world["lp_pol"]).sum() == pytest.approx(1.0, abs=1e-5)
    assert np.exp(world["lp_ref"]).sum() == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < world["exact"] < np.log(121) - 0.5  # an informative DID, neither a point mass nor uniform


def test_score_responses_vs_naive(world):
    model = world["policy"]
    for y in [(1,), (2, 1), (0, 0, 3, 2), (3, 0, 1)]:
        naive = 0.0
        for t in range(len(y)):
            ids = torch.tensor([list(PROMPT) + list(y[:t])])
            naive += torch.log_softmax(model(input_ids=ids).logits[0, -1], -1)[y[t]].item()
        assert world["lp_pol"][world["index"][y]] == pytest.approx(naive, abs=1e-5)
    assert score_responses(model, PROMPT, [()])[0] == 0.0


def test_sampler_matches_the_model(world):
    k = 3000
    resp, log_prop = sample_responses(world["policy"], PROMPT, k, max_new_tokens=MAX_NEW, eos_token_id=EOS,
                                      seed=0, batch_size=1000)
    idx = np.array([world["index"][y] for y in resp])  # KeyError if a sample left the enumerated support
    np.testing.assert_allclose(log_prop, world["lp_pol"][idx], atol=1e-5)
    freq = np.bincount(idx, minlength=len(world["support"])) / k
    tv = 0.5 * np.abs(freq - np.exp(world["lp_pol"])).sum()
    # TV of an exact sampler at this K: ≈ 0.05 for this world (seeded numpy draws); a wrong one is far off.
    assert tv < 0.1
    again, _ = sample_responses(world["policy"], PROMPT, k, max_new_tokens=MAX_NEW, eos_token_id=EOS, seed=0,
                                batch_size=1000)
    assert again == resp


def test_sampler_log_probs_vs_naive():
    logits = torch.randn(3, 9)
    lp = sampler_log_probs(logits, temperature=0.7, top_k=4)
    for row, out in zip(logits, lp):
        x = (row / 0.7).tolist()
        keep = sorted(range(9), key=lambda i: -x[i])[:4]
        z = np.log(sum(np.exp(x[i]) for i in keep))
        for i in range(9):
            assert out[i].item() == (pytest.approx(x[i] - z, abs=1e-5) if i in keep else float("-inf"))
    lp = sampler_log_probs(logits, top_p=0.6)
    for row, out in zip(logits, lp):
        p = torch.softmax(row, -1).tolist()
        order = sorted(range(9), key=lambda i: -p[i])
        keep, mass = [], 0.0
        for i in order:
            keep.append(i)
            mass += p[i]
            if mass >= 0.6:
                break
        assert set(torch.isfinite(out).nonzero().flatten().tolist()) == set(keep)
        assert torch.exp(out).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_sample_did_entropy_table(world):
    df = sample_did_entropy(world["policy"], world["reference"], None, [PROMPT, (3, 3)], K=64, seed=1,
                            max_new_tokens=MAX_NEW, eos_token_id=EOS)
    assert len(df) == 128 and set(df.prompt_index) == {0, 1}
    np.testing.assert_allclose(df.log_ratio, df.logp_policy - df.logp_reference)
    np.testing.assert_allclose(df.logp_proposal, df.logp_policy, atol=1e-5)
    assert (df.n_tokens == df.response_ids.map(len)).all()
    ref_prop = sample_did_entropy(world["policy"], world["reference"], None, [PROMPT], K=16, seed=1,
                                  proposal="reference", max_new_tokens=MAX_NEW, eos_token_id=EOS)
    np.testing.assert_allclose(ref_prop.logp_proposal, ref_prop.logp_reference, atol=1e-5)
    with pytest.raises(ValueError):
        sample_did_entropy(world["policy"], world["reference"], None, [PROMPT], K=4, max_new_tokens=2)


def test_snis_from_the_real_sampler_approaches_exact(world):
    df = sample_did_entropy(world["policy"], world["reference"], None, [PROMPT], K=2048, seed=3,
                            max_new_tokens=MAX_NEW, eos_token_id=EOS, batch_size=1024)
    s = summarize_samples(df, n_boot=200)
    assert abs(s.snis_entropy[0] - world["exact"]) < 0.2
    assert s.restricted_entropy[0] > world["exact"] + 1  # H_S over 2048 draws is not H(q)


def test_snis_error_falls_with_k(world):
    """Draws from the enumerated π: mean |Ĥ − H(q)| over 100 seeds at K = 16, 128, 1024, 8192."""
    lp, d = world["lp_pol"], world["lp_pol"] - world["lp_ref"]
    p = np.exp(lp) / np.exp(lp).sum()
    rng = np.random.default_rng(0)
    errs = []
    for k in (16, 128, 1024, 8192):
        idx = rng.choice(len(p), size=(100, k), p=p)
        errs.append(float(np.mean(np.abs(snis_entropy(d[idx], lp[idx]) - world["exact"]))))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.05, errs


def test_engine_scorer_matches_simple_scorer(world):
    from did_core.sampling import engine_scorer

    support = world["support"][:41]  # odd count: exercises the padding pseudo-response
    got = engine_scorer(token_budget=512)(world["policy"], PROMPT, support)
    np.testing.assert_allclose(got, world["lp_pol"][:41], atol=1e-4)
