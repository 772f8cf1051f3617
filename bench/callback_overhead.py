"""What DIDCallback costs a training run (README, "Live during training"): its share of the wall time of a
TRL 1.16 DPOTrainer run on this machine's CPU, scoring a probe set every N steps.

    python bench/callback_overhead.py [--probe 256] [--limits 32 256] [--every 10 50] [--steps 50] [--bf16]

Model: a Llama built from a config (default 4 layers, hidden 128, 4 heads, 2 KV heads, tied head) over
the character tokenizer of did_core/tiny.py, saved to a temporary folder and trained from there (so TRL
loads its reference like a user's). Data: random text pairs over a 10-letter alphabet (prompts 20–80
characters, responses 20–120: ~40–200 tokens a sequence). Training: TRL's defaults (batch 8, β 0.1)
except lr 1e-4, max length 256, float32 (`--bf16`: TRL's bf16 autocast, which CPUs without bf16
matmuls run several times slower, so the callback's share looks smaller than on a GPU), no eval set
(the callback runs every N steps, `every=N`, so no TRL evaluation is in the wall time). Each
configuration trains once with the callback and once without; printed: the callback's own seconds
(reference once at train start, then each scoring), its share of the callback run's wall time, and
the difference of the two wall times (noisy on shared cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: spinning OpenMP waits stall on busy shared cores
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALPHABET = "abcdefghij"


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return "".join(rng.choice(ALPHABET + " ") for _ in range(rng.randint(lo, hi)))
    return [{"prompt": text(20, 80) + "?", "chosen": text(20, 120), "rejected": text(20, 120)} for _ in range(n)]


def build(root: Path, a: argparse.Namespace) -> tuple[Path, list[dict], Path]:
    """The model folder, the training rows and the probe file."""
    from did_core.tiny import build_tokenizer, tiny_llama

    tok = build_tokenizer(alphabet=ALPHABET + " ?")
    model = tiny_llama(len(tok), n_layer=a.layers, hidden=a.hidden, n_head=4, n_kv_head=2, seed=0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    probe = root / "probe.jsonl"
    probe.write_text("".join(json.dumps(r) + "\n" for r in _rows(a.probe, 2)))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Llama, {a.layers} layers, hidden {a.hidden}, {n_params / 1e6:.2f}M parameters; probe {a.probe} pairs; "
          f"{'bf16 autocast' if a.bf16 else 'float32'} training, batch {a.batch}", flush=True)
    return root / "model", _rows(a.batch * a.steps, 1), probe


def train(model_dir: Path, rows: list[dict], out: Path, a: argparse.Namespace, callback=None) -> float:
    """Wall seconds of one `trainer.train()`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(out), max_steps=a.steps, per_device_train_batch_size=a.batch, learning_rate=1e-4,
                     max_length=a.max_length, save_strategy="no", report_to="none", use_cpu=True, seed=0,
                     disable_tqdm=True, dataloader_num_workers=0, logging_steps=10, bf16=a.bf16)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(model_dir),
                         callbacks=[callback] if callback else [])
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", type=int, default=256, help="pairs in the probe file")
    ap.add_argument("--limits", type=int, nargs="+", default=[32, 256], help="pairs scored (DIDCallback limit; "
                    "its default is 32)")
    ap.add_argument("--every", type=int, nargs="+", default=[10, 50], help="score every N steps (TRL's "
                    "default eval cadence: eval_steps = logging_steps = 10)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8, help="per-device train batch (TRL's default: 8)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on shared cores)")
    ap.add_argument("--no-token-level", action="store_true", help="score without token-level DID entropy")
    ap.add_argument("--bf16", action="store_true", help="train with TRL's bf16 autocast (its default)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from did_core.callback import DIDCallback
    from did_core.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, rows, probe = build(root, a)
        base = train(model_dir, rows, root / "plain", a)
        print(f"training alone: {a.steps} steps × {a.batch} pairs, {base:.1f} s ({base / a.steps:.2f} s a step)", flush=True)
        print("pairs | every N | scorings | reference s | per scoring s | callback s | share of wall | wall − plain",
              flush=True)
        for limit, n in ((limit, n) for n in a.every for limit in a.limits):
            ws = root / f"ws{n}-{limit}"
            cb = DIDCallback(str(probe), ws, every=n, name="bench", token_level=not a.no_token_level, limit=limit)
            wall = train(model_dir, rows, root / f"out{n}-{limit}", a, cb)
            info = Workspace(ws).run("bench").live_info
            per = list(info["score_seconds"].values())
            spent = info["reference_seconds"] + sum(per)
            print(f"{limit:5d} | {n:7d} | {len(per):8d} | {info['reference_seconds']:11.2f} | {sum(per) / max(len(per), 1):13.2f} | "
                  f"{spent:10.1f} | {spent / wall:12.1%} | {(wall - base) / base:+11.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
