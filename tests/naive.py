"""A deliberately naive scorer: the independent implementation the engine is checked against.

One forward per response over the full prompt + completion, the model's own logits, a full
log-softmax in float64, Python loops and Python floats. Slow and obviously right.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def naive_token_logps(model: torch.nn.Module, prompt_ids, completion_ids) -> list[float]:
    """log π(y_t | x, y_<t) for each completion token, one full forward, float64 log-softmax."""
    if not completion_ids:
        return []
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # (L, V)
    out = []
    for t, tok in enumerate(completion_ids):
        out.append(float(logp[len(prompt_ids) - 1 + t, tok]))  # position P-1+t predicts token t
    return out


def naive_logp_sum(model: torch.nn.Module, prompt_ids, completion_ids) -> float:
    total = 0.0  # Python float: float64 accumulation
    for x in naive_token_logps(model, prompt_ids, completion_ids):
        total += x
    return total


@torch.no_grad()
def naive_did_entropy(policy: torch.nn.Module, reference: torch.nn.Module, prompt_ids, completion_ids) -> list[float]:
    """H_t = −Σ_v q_t(v) log q_t(v), q_t ∝ π(v)/π_ref(v): a double loop over positions and vocabulary."""
    if not completion_ids:
        return []
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    lp = torch.log_softmax(policy(input_ids=ids).logits[0].double(), dim=-1).tolist()
    lr = torch.log_softmax(reference(input_ids=ids).logits[0].double(), dim=-1).tolist()
    out = []
    for t in range(len(completion_ids)):
        row = len(prompt_ids) - 1 + t
        a = [lp[row][v] - lr[row][v] for v in range(len(lp[row]))]
        m = max(a)
        z = 0.0
        for v in range(len(a)):
            z += math.exp(a[v] - m)
        h = 0.0
        for v in range(len(a)):
            q = math.exp(a[v] - m) / z
            if q > 0:
                h -= q * math.log(q)
        out.append(h)
    return out
