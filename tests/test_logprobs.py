"""did_core/logprobs.py: the pure helpers (per-token log-probs, DID entropy) against their naive equivalents."""

from __future__ import annotations

import math

import torch

from did_core.logprobs import did_entropy, token_logprobs


def test_token_logprobs_is_stable_and_exact():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 50, generator=g, dtype=torch.float64) * 5 + 1e4  # a naive exp() overflows
    targets = torch.randint(0, 50, (7,), generator=g)
    want = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
    got = token_logprobs(logits, targets)
    assert got.dtype == torch.float64 and torch.allclose(got, want, atol=1e-10)
    assert token_logprobs(logits.to(torch.bfloat16), targets).dtype == torch.float32


def test_did_entropy_bounds_and_double_loop():
    g = torch.Generator().manual_seed(1)
    lp = torch.log_softmax(torch.randn(5, 30, generator=g, dtype=torch.float64) * 3, -1)
    lr = torch.log_softmax(torch.randn(5, 30, generator=g, dtype=torch.float64) * 3, -1)
    got = did_entropy(lp, lr)
    for t in range(5):
        a = [float(lp[t, v] - lr[t, v]) for v in range(30)]
        z = sum(math.exp(x) for x in a)
        h = -sum(math.exp(x) / z * math.log(math.exp(x) / z) for x in a)
        assert abs(float(got[t]) - h) < 1e-10
    assert torch.all(got >= 0) and torch.all(got <= math.log(30))
    # A peaked DID has entropy ~0; equal models give log|V|; −inf under both models gets zero mass.
    peaked = torch.full((1, 30), -1e4, dtype=torch.float64)
    peaked[0, 3] = 0.0
    assert float(did_entropy(peaked, torch.zeros(1, 30, dtype=torch.float64))) < 1e-10
    assert torch.allclose(did_entropy(lp, lp), torch.full((5,), math.log(30), dtype=torch.float64))
    lp_inf = lp.clone()
    lp_inf[:, 0] = -math.inf
    lr_inf = lr.clone()
    lr_inf[:, 0] = -math.inf
    assert torch.isfinite(did_entropy(lp_inf, lr_inf)).all()
    torch.testing.assert_close(did_entropy(lp_inf, lr_inf), did_entropy(lp[:, 1:], lr[:, 1:]))
    # Impossible only under the reference: the ratio is infinite there and takes all the DID mass.
    assert torch.allclose(did_entropy(lp, lr_inf), torch.zeros(5, dtype=torch.float64))
    # Raw logits give the same DID as log-probabilities (softmax ignores a per-row shift).
    torch.testing.assert_close(did_entropy(lp + 7.0, lr - 3.0), got)
