"""Pure tensor maths for scoring: per-token log-probabilities and token-level DID entropy.

No I/O, no device moves, no model calls: every function maps tensors to tensors on the device and
(at least float32) precision it was given. The engine (`engine.py`) applies the output head and
hands rows of logits here. Natural logs throughout (nats).
"""

from __future__ import annotations

import math

import torch


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half / bfloat16 to float32; keep float32 and float64 as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target token under its row's next-token distribution.

    logits: (N, V) unnormalised scores, any float dtype (computed in float32 at least).
    targets: (N,) int64 token ids.
    Returns (N,) in float32 (float64 when the logits are float64).

    Naive equivalent::

        torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None])[:, 0]

    Here the (N, V) log-softmax is never materialised: `logit[target] − logsumexp(logits)`;
    `torch.logsumexp` subtracts the row maximum first, so large logits do not overflow.
    """
    logits = _at_least_float32(logits)
    picked = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)  # (N,)
    return picked - torch.logsumexp(logits, dim=-1)  # (N,)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(N, V) logits -> (N, V) normalised log-probabilities, float32 at least."""
    return torch.log_softmax(_at_least_float32(logits), dim=-1)


def did_entropy(policy_logprobs: torch.Tensor, reference_logprobs: torch.Tensor) -> torch.Tensor:
    """Token-level entropy of the Differential Information Distribution (DESIGN.md §2, estimator 1).

    policy_logprobs, reference_logprobs: (N, V) normalised log-probabilities log π(·|ctx) and
    log π_ref(·|ctx) at the same N positions. Returns (N,) H_t in [0, log V].

    a_t(v) = log π(v|ctx) − log π_ref(v|ctx);  q_t = softmax(a_t);  H_t = −Σ_v q_t(v) log q_t(v).

    Naive equivalent (for one row)::

        a = lp - lr; q = a.exp() / a.exp().sum(); H = -(q * q.log()).sum()

    `log_softmax(a)` keeps the exponentials in range (a can be ±tens of nats). Tokens impossible
    under both models (−inf − (−inf) = nan) get zero DID mass, which is what the ratio of two zero
    probabilities means in the limit that keeps q normalised.
    """
    lp = _at_least_float32(policy_logprobs)
    lr = _at_least_float32(reference_logprobs)
    a = lp - lr  # (N, V)
    a = torch.where(torch.isnan(a), torch.full_like(a, -math.inf), a)
    log_q = torch.log_softmax(a, dim=-1)  # (N, V)
    q = log_q.exp()
    # q·log q -> 0 where q == 0 (log q = −inf would give nan).
    plogp = torch.where(q > 0, q * log_q, torch.zeros_like(q))
    h = -plogp.sum(dim=-1)  # (N,)
    # Rounding can leave −1e-7 or log V + 1e-7; the true value lies in the closed interval.
    return h.clamp(0.0, math.log(a.shape[-1]))


def did_entropy_from_logits(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """`did_entropy` from raw (N, V) logits of both models. Returns (N,)."""
    return did_entropy(log_softmax(policy_logits), log_softmax(reference_logits))


def segment_sums(values: torch.Tensor, lengths: list[int]) -> list[float]:
    """Sum consecutive segments of a flat vector in float64.

    values: (sum(lengths),) per-token values, segments back to back; lengths: one per segment
    (zero allowed -> 0.0). Returns one Python float per segment.

    Naive equivalent: `[float(sum(float(x) for x in seg)) for seg in values.split(lengths)]`.
    """
    v64 = values.detach().to(torch.float64)
    return [float(seg.sum()) for seg in v64.split(lengths)]
