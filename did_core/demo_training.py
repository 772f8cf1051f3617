"""The demo's DPO runs and what is measured on them: TRL's `DPOTrainer` from the SFT reference, then,
per checkpoint, the exact sequence-level DID table beside its K-sample estimates (docs/DEMO.md, steps 4 and 6).

Both import transformers and TRL when called, not at import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from did_core.demo_language import Language, encode, entropy_rows, response_logprobs
from did_core.lab import js

if TYPE_CHECKING:
    from did_core.demo import DemoConfig
    from did_core.demo_language import ResponseLogprobs
    from did_core.manifest import RunManifest


def train_dpo(reference_dir: Path, rows: list[dict], out_dir: Path, cfg: DemoConfig,
              progress: Callable[[int, int], None] | None = None, beta: float | None = None) -> None:
    """TRL 1.16 DPOTrainer from the reference, on `rows`, saving checkpoint-N every `save_every` steps
    (β: `beta`, default `cfg.beta`)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class _Report(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if progress is not None:
                progress(state.global_step, state.max_steps)

    args = DPOConfig(
        output_dir=str(out_dir), beta=cfg.beta if beta is None else beta, learning_rate=cfg.dpo_lr, lr_scheduler_type="constant",
        per_device_train_batch_size=cfg.dpo_batch_size, max_steps=cfg.dpo_steps, save_strategy="steps",
        save_steps=cfg.save_every, save_only_model=True, logging_steps=2, report_to="none", use_cpu=True,
        seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=True, dataloader_num_workers=0, max_length=None)
    model = AutoModelForCausalLM.from_pretrained(reference_dir)
    tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[_Report()])
    trainer.remove_callback(PrinterCallback)  # the log lines go to trainer_state.json, not stdout
    trainer.train()


def exact_did_table(run_manifest: RunManifest, lang: Language, tokenizer, reference, ref_lp: ResponseLogprobs,
                    target: dict, cfg: DemoConfig) -> pd.DataFrame:
    """One row per (prompt, checkpoint): the exact sequence-level DID entropy over the language
    (`exact_did_entropy`) and over the sampler's whole support, language + cut sequences
    (`exact_did_entropy_support`: what the SNIS estimate targets), the policy's exact entropy and
    JS(π, π*) over the language, and the K-sample estimates (did_core.entropy.summarize_samples over
    K = cfg.k_samples responses drawn from the policy, cut after L+1 tokens) beside them.

    target: `demo_data.target_world`'s tensors for the run's dataset."""
    from transformers import AutoModelForCausalLM

    from did_core.entropy import summarize_samples
    from did_core.sampling import sample_did_entropy

    prompts = lang.prompts()
    prompt_ids = [encode(tokenizer, p) for p in prompts]
    log_r = math.log(len(lang.responses()))
    ref_entropy = entropy_rows(ref_lp.logp).numpy()
    frames = []
    for ck in run_manifest.checkpoints:
        policy = AutoModelForCausalLM.from_pretrained(ck.path).eval()
        lp = response_logprobs(policy, tokenizer, lang)
        d = lp.logp - ref_lp.logp                                                 # (n, R) log-ratios
        frame = pd.DataFrame({
            "prompt_id": np.arange(len(prompts)), "prompt": prompts, "model": ck.name, "step": ck.step,
            "exact_did_entropy": entropy_rows(d).numpy(), "max_did_entropy": log_r,
            "exact_did_entropy_support": entropy_rows(lp.support_logp() - ref_lp.support_logp()).numpy(),
            "target_did_entropy": entropy_rows(target["log_q"]).numpy(),
            "policy_entropy": entropy_rows(lp.logp).numpy(), "ref_entropy": ref_entropy,
            "target_policy_entropy": entropy_rows(target["log_target"]).numpy(),
            "js_target": js(torch.log_softmax(lp.logp, -1), target["log_target"]).numpy(),
            "ref_js_target": js(torch.log_softmax(ref_lp.logp, -1), target["log_target"]).numpy(),
            "language_mass": lp.language_mass.numpy(), "ref_language_mass": ref_lp.language_mass.numpy(),
        })
        samples = sample_did_entropy(policy, reference, tokenizer, prompt_ids, cfg.k_samples, seed=cfg.seed,
                                     max_new_tokens=lang.max_len + 1)
        est = summarize_samples(samples, n_boot=cfg.n_boot, seed=cfg.seed).rename(columns={"prompt_index": "prompt_id"})
        frames.append(frame.merge(est, on="prompt_id", how="left"))
    return pd.concat(frames, ignore_index=True)
