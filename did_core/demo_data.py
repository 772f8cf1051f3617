"""The demo's preference data, pure: the lab's target construction on the SFT reference's exact distribution.

Per prompt, from log π_ref(y|x) over every response of the language (`demo_language`): q* with its
entropy set by a temperature (as in `did_core.lab`), π* ∝ π_ref·q*, π_l ∝ π_ref^{1+β} π*^{−β}, and
pairs y_w ~ π_ref, y_l ~ π_l (docs/DEMO.md, step 3). Deterministic from the config's seed; nothing
here reads or writes files or trains a model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from did_core.demo_language import Language
from did_core.lab import rejected_distribution, temperature_for_entropy

if TYPE_CHECKING:
    from did_core.demo import DemoConfig


def target_world(log_ref: torch.Tensor, fraction: float, alignment: float, beta: float,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per prompt, the lab's construction on the reference's exact distribution.

    log_ref: (n, R) log π_ref(y|x) renormalised over the language. Returns (n, R) log q*, log π*,
    log π_l, and (n,) temperatures, with H(q*(·|x)) = fraction·log R for every prompt.
    """
    n, r = log_ref.shape
    noise = torch.randn(n, r, generator=generator, dtype=torch.float64)
    z = (log_ref - log_ref.mean(-1, keepdim=True)) / log_ref.std(-1, keepdim=True).clamp_min(1e-12)
    energies = -alignment * z + math.sqrt(max(0.0, 1 - alignment**2)) * noise          # (n, R)
    temps = torch.tensor([temperature_for_entropy(e, fraction * math.log(r)) for e in energies], dtype=torch.float64)
    log_q = torch.log_softmax(-energies / temps[:, None], -1)
    log_target = torch.log_softmax(log_ref + log_q, -1)
    log_rej = torch.stack([rejected_distribution("did", a, b, beta) for a, b in zip(log_ref, log_target)])
    return {"log_q": log_q, "log_target": log_target, "log_rejected": log_rej, "temperature": temps}


def sample_preference_pairs(prompts: list[str], completions: list[str], log_ref: torch.Tensor,
                            log_rejected: torch.Tensor, per_prompt: int, generator: torch.Generator,
                            prefix: str) -> list[dict]:
    """`per_prompt` pairs per prompt, y_w ~ π_ref, y_l ~ π_l, resampled until y_w ≠ y_l (conditioning
    on a ≠ b leaves each ordered pair's relative odds, hence σ(β log q*(y_w) − β log q*(y_l)), as is)."""
    rows = []
    for i, prompt in enumerate(prompts):
        got: list[tuple[int, int]] = []
        while len(got) < per_prompt:
            w = torch.multinomial(log_ref[i].exp(), 4 * per_prompt, replacement=True, generator=generator)
            lo = torch.multinomial(log_rejected[i].exp(), 4 * per_prompt, replacement=True, generator=generator)
            got.extend((a, b) for a, b in zip(w.tolist(), lo.tolist()) if a != b)
        for j, (a, b) in enumerate(got[:per_prompt]):
            rows.append({"id": f"{prefix}-{i:02d}-{j:02d}", "prompt": prompt, "chosen": completions[a],
                         "rejected": completions[b]})
    return rows


def make_preference_data(lang: Language, log_ref: torch.Tensor, cfg: DemoConfig) -> dict[str, dict]:
    """Both datasets from the reference's exact distribution:
    {"low"|"high": {"rows", "world" (target_world's tensors), "fraction", "alignment"}}."""
    out = {}
    for k, (kind, frac, align) in enumerate((("low", cfg.low_entropy, cfg.low_alignment),
                                             ("high", cfg.high_entropy, cfg.high_alignment))):
        g = torch.Generator().manual_seed(30_000 + 100 * cfg.seed + k)
        world = target_world(log_ref, frac, align, cfg.beta, g)
        rows = sample_preference_pairs(lang.prompts(), [lang.completion(r) for r in lang.responses()], log_ref,
                                       world["log_rejected"], cfg.pairs_per_prompt, g, kind)
        out[kind] = {"rows": rows, "world": world, "fraction": frac, "alignment": align}
    return out
