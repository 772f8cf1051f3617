"""A tiny on-disk world for end-to-end tests: a reference, a TRL-style run of checkpoints, data.

Checkpoints are the reference with seeded noise added, so log-ratios are non-zero and differ.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from did_core.tiny import build_tokenizer, tiny_llama

ALPHABET = "abcdeht .?"


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            rec = {"prompt": _text(rng, 2, 12), "chosen": _text(rng, 1, 9), "rejected": _text(rng, 1, 9)}
            f.write(json.dumps(rec) + "\n")
    return path


def build_world(root: Path, n_pairs: int = 40, steps: tuple[int, ...] = (2, 4), beta: float = 0.25) -> dict:
    """Writes reference/, run/checkpoint-N/ (+ trainer_state.json) and pairs.jsonl under `root`."""
    tok = build_tokenizer(alphabet=ALPHABET, merges=[("a", "b"), ("t", "h"), ("th", "e")])
    ref = tiny_llama(len(tok), seed=0)
    ref_dir = root / "reference"
    ref.save_pretrained(ref_dir)
    tok.save_pretrained(ref_dir)
    run = root / "run"
    log_history = []
    for k, step in enumerate(steps):
        pol = tiny_llama(len(tok), seed=0)
        g = torch.Generator().manual_seed(100 + k)
        with torch.no_grad():
            for p in pol.parameters():
                p.add_(0.05 * (k + 1) * torch.randn(p.shape, generator=g))
        d = run / f"checkpoint-{step}"
        pol.save_pretrained(d)
        tok.save_pretrained(d)
        log_history.append({"step": step, "loss": 0.69 - 0.01 * step, "rewards/margins": 0.01 * step})
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log_history}))
    data = write_pairs(root / "pairs.jsonl", n_pairs)
    return {"ref": ref_dir, "run": run, "data": data, "tokenizer": tok, "steps": steps, "beta": beta}
