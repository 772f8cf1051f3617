"""A tiny TRL DPO run with DIDCallback, for tests/test_callback.py: imported for in-process cases, run as
a script for the ones that need their own processes (two torchrun ranks, kill -9 and resume).

    python tests/live_train.py ROOT OUT WORKSPACE [--steps 8] [--batch 4] [--accumulate 1] [--resume] [--no-callback]

ROOT holds what `make_world` writes: reference/ (a tiny Llama from a config, its character tokenizer),
train.jsonl and probe.jsonl. Evaluation and saving every 2 steps, as the acceptance test asks.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALPHABET = "abcdeht .?"
BETA, MAX_LENGTH, EVERY = 0.37, 64, 2


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))
    return [{"prompt": text(3, 16) + "?", "chosen": text(2, 30), "rejected": text(2, 30)} for _ in range(n)]


def make_world(root: Path, n_train: int = 32, n_probe: int = 12) -> Path:
    """reference/ (tiny Llama + tokenizer), train.jsonl and probe.jsonl under `root`."""
    from did_core.tiny import build_tokenizer, tiny_llama

    tok = build_tokenizer(alphabet=ALPHABET, merges=[("a", "b"), ("t", "h"), ("th", "e")])
    ref = tiny_llama(len(tok), seed=0)
    ref.save_pretrained(root / "reference")
    tok.save_pretrained(root / "reference")
    for name, rows in (("train.jsonl", _rows(n_train, 1)), ("probe.jsonl", _rows(n_probe, 2))):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def dpo_args(out: Path, steps: int, batch: int, **kw):
    from trl import DPOConfig

    base = dict(output_dir=str(out), beta=BETA, learning_rate=5e-3, lr_scheduler_type="constant",
                per_device_train_batch_size=batch, per_device_eval_batch_size=4, max_steps=steps,
                save_strategy="steps", save_steps=EVERY, eval_strategy="steps", eval_steps=EVERY, logging_steps=EVERY,
                report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True, dataloader_num_workers=0,
                max_length=MAX_LENGTH)
    return DPOConfig(**(base | kw))


def trainer_for(root: Path, out: Path, *, steps: int = 6, batch: int = 4, peft: bool = False, callbacks=(), **kw):
    """A DPOTrainer on ROOT's reference and data (eval set = the probe), not yet trained."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOTrainer

    train, probe = (Dataset.from_list([json.loads(x) for x in (root / f).read_text().splitlines()])
                    for f in ("train.jsonl", "probe.jsonl"))
    extra = {}
    if peft:
        from peft import LoraConfig

        extra["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(root / "reference"), args=dpo_args(out, steps, batch, **kw),
                         train_dataset=train, eval_dataset=probe, processing_class=AutoTokenizer.from_pretrained(
                             root / "reference"), callbacks=list(callbacks), **extra)
    trainer.remove_callback(PrinterCallback)
    return trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    ap.add_argument("--resume", action="store_true", help="resume from the last checkpoint in OUT")
    ap.add_argument("--no-callback", action="store_true")
    ap.add_argument("--chunk-delay", type=float, default=0.0, help="seconds of sleep after each stored chunk (a kill lands between chunks)")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from did_core.callback import DIDCallback

    delay = (lambda c: time.sleep(a.chunk_delay)) if a.chunk_delay > 0 else None
    callbacks = [] if a.no_callback else [DIDCallback(str(a.root / "probe.jsonl"), a.workspace, name="live",
                                                      on_chunk=delay)]
    trainer = trainer_for(a.root, a.out, steps=a.steps, batch=a.batch, callbacks=callbacks, save_only_model=False,
                          gradient_accumulation_steps=a.accumulate)
    trainer.train(resume_from_checkpoint=True if a.resume else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
