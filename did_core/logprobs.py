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


def did_entropy(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """Token-level entropy of the Differential Information Distribution (docs/REFERENCE.md §3, estimator 1).

    policy_logits, reference_logits: (N, V) next-token scores of π and π_ref at the same N
    positions — raw logits or normalised log-probabilities, either works (see below).
    Returns (N,) H_t in [0, log V], float32 at least.

    a_t(v) = log π(v|ctx) − log π_ref(v|ctx);  q_t = softmax(a_t);  H_t = −Σ_v q_t(v) log q_t(v).

    Naive equivalent (one row)::

        a = log_softmax(zp) - log_softmax(zr); q = softmax(a); H = -(q * log(q)).sum()

    Two shortcuts, both exact: softmax ignores a per-row constant, so a_t may be taken as the raw
    logit difference zp − zr (the two log-normalisers only shift the row); and with a' = a − max(a),
    Z = Σ exp(a'), H = log Z − Σ exp(a')·a' / Z, which needs one exp pass and no (N, V) log-softmax.
    Every term stays in [−|a'|, 0] after the shift, so float32 is safe. Tokens impossible under both
    models (−inf − (−inf) = nan) get no DID mass; tokens impossible only under π_ref (+inf) share it.
    """
    a = _at_least_float32(policy_logits) - _at_least_float32(reference_logits)  # (N, V)
    finite = bool(torch.isfinite(a).all())
    if not finite:
        a = torch.nan_to_num(a, nan=-math.inf, posinf=torch.finfo(a.dtype).max / 4)
    a.sub_(a.amax(dim=-1, keepdim=True))  # a' <= 0, max 0 per row
    e = torch.exp(a)  # (N, V)
    z = e.sum(dim=-1)  # (N,) >= 1
    weighted = e.mul_(a) if finite else torch.where(e > 0, e * a, torch.zeros_like(e))  # exp(a')·a'
    h = torch.log(z) - weighted.sum(dim=-1) / z  # (N,)
    # Rounding can leave −1e-7 or log V + 1e-7; the true value lies in the closed interval.
    return h.clamp(0.0, math.log(a.shape[-1]))


