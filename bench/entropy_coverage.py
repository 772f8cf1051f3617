"""Coverage of the DID entropy bootstrap intervals on finite worlds where H(q) is known exactly.

Each world: two tiny random GPT-2s (policy, reference) over a few symbols + EOS; responses end at
the first EOS or are cut after `max_new` tokens, which is exactly the sampler's support, so every
response is enumerated once and scored under both models (Σπ = 1 is checked). Then, per seed,
K responses are drawn from the enumerated policy distribution π (the proposal; equivalent to the
model's ancestral sampler, which tests/test_sampling.py checks against it), and both estimators
with their 95% percentile-bootstrap intervals are computed:
  snis        Ĥ = log Ẑ − Σ ω̃ d with ω = 1/π_ref(y)   — an estimate of H(q)
  restricted  H_S = H(softmax(d over the K draws))     — the paper's K = 32 diagnostic, not an
                                                          estimate of H(q); shown for contrast
Coverage = share of seeds whose interval contains the exact H(q).

Run: python bench/entropy_coverage.py [--seeds 200] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from did_core.entropy import (  # noqa: E402
    bootstrap_replicates,
    did_entropy,
    exact_did_entropy,
    percentile_interval,
    snis_entropy,
    snis_ess,
)
from did_core.sampling import enumerate_responses, score_responses  # noqa: E402
from did_core.tiny import tiny_gpt2  # noqa: E402

EOS = 1


def _model(vocab: int, seed: int, sharpness: float) -> torch.nn.Module:
    m = tiny_gpt2(vocab, n_layer=1, n_embd=16, n_head=2, n_positions=16, seed=seed)
    with torch.no_grad():
        m.transformer.ln_f.weight.mul_(sharpness)
    return m


def build_world(vocab: int, max_new: int, prompt: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(log π, d) over the enumerated support, each (|Y|,)."""
    policy, reference = _model(vocab, 0, 12.0), _model(vocab, 1, 4.0)
    support = enumerate_responses(vocab, EOS, max_new)
    lp = score_responses(policy, prompt, support, batch_size=1024)
    lr = score_responses(reference, prompt, support, batch_size=1024)
    assert abs(np.exp(lp).sum() - 1) < 1e-4 and abs(np.exp(lr).sum() - 1) < 1e-4, "enumeration misses support"
    return lp, lp - lr


def coverage(lp: np.ndarray, d: np.ndarray, k: int, seeds: int, n_boot: int, level: float) -> dict[str, float]:
    exact = exact_did_entropy(d)
    p = np.exp(lp) / np.exp(lp).sum()
    out: dict[str, list] = {"snis_est": [], "snis_lo": [], "snis_hi": [], "snis_ess": [], "hs_est": [],
                            "hs_lo": [], "hs_hi": []}
    chunk = max(1, 4_000_000 // (n_boot * k))                           # bound the (S, B, K) temporaries
    for start in range(0, seeds, chunk):
        block = range(start, min(seeds, start + chunk))
        idx = np.stack([np.random.default_rng(s).choice(len(p), size=k, p=p) for s in block])   # (S, K)
        dk, lk = d[idx], lp[idx]
        boot_rng = np.random.default_rng(10_000 + start)
        lo, hi = percentile_interval(bootstrap_replicates(dk, lk, estimator="snis", n_boot=n_boot, rng=boot_rng),
                                     level)
        hlo, hhi = percentile_interval(bootstrap_replicates(dk, estimator="restricted", n_boot=n_boot,
                                                            rng=boot_rng), level)
        for key, val in (("snis_est", snis_entropy(dk, lk)), ("snis_lo", lo), ("snis_hi", hi),
                         ("snis_ess", snis_ess(dk, lk)), ("hs_est", did_entropy(dk)), ("hs_lo", hlo),
                         ("hs_hi", hhi)):
            out[key].extend(np.atleast_1d(val).tolist())
    a = {key: np.asarray(v) for key, v in out.items()}
    return {
        "snis_cover": float(np.mean((a["snis_lo"] <= exact) & (exact <= a["snis_hi"]))),
        "snis_bias": float(np.mean(a["snis_est"] - exact)),
        "snis_mae": float(np.mean(np.abs(a["snis_est"] - exact))),
        "snis_width": float(np.mean(a["snis_hi"] - a["snis_lo"])),
        "snis_ess": float(np.median(a["snis_ess"])),
        "hs_cover": float(np.mean((a["hs_lo"] <= exact) & (exact <= a["hs_hi"]))),
        "hs_mean": float(np.mean(a["hs_est"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--level", type=float, default=0.95)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    worlds = {"3 symbols, L=4": (4, 4, (2, 3, 0)), "5 symbols, L=5": (6, 5, (2, 3, 4, 0))}
    print(f"seeds={args.seeds} n_boot={args.n_boot} level={args.level}; proposal = policy, ω = 1/π_ref(y)")
    for name, (vocab, max_new, prompt) in worlds.items():
        lp, d = build_world(vocab, max_new, prompt)
        exact = exact_did_entropy(d)
        print(f"\nworld {name}: |Y|={d.size}  exact H(q)={exact:.4f} nats  log|Y|={np.log(d.size):.4f}  "
              f"H(π)={-(np.exp(lp) * lp).sum():.4f}")
        print(f"{'K':>6} {'SNIS cover':>10} {'bias':>8} {'MAE':>7} {'CI width':>8} {'med ESS':>8} |"
              f" {'H_S cover':>9} {'mean H_S':>8}")
        for k in (32, 256):
            c = coverage(lp, d, k, args.seeds, args.n_boot, args.level)
            print(f"{k:>6} {c['snis_cover']:>10.3f} {c['snis_bias']:>+8.4f} {c['snis_mae']:>7.4f} "
                  f"{c['snis_width']:>8.4f} {c['snis_ess']:>8.1f} | {c['hs_cover']:>9.3f} {c['hs_mean']:>8.4f}")
        p = np.exp(lp) / np.exp(lp).sum()
        rng = np.random.default_rng(0)
        errs = []
        for k in (8, 32, 128, 512, 2048, 8192):
            idx = rng.choice(d.size, size=(100, k), p=p)
            errs.append(f"K={k}: {np.mean(np.abs(snis_entropy(d[idx], lp[idx]) - exact)):.4f}")
        print("SNIS mean |error| over 100 seeds: " + ", ".join(errs))
    print(f"\n({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
