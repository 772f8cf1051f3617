"""The embedded demo workspace: real TRL DPO runs on a small language, scored, with exact DID entropies.

`build_demo(workspace)` (also `python -m did_core demo --workspace DIR`) does, deterministically from
a seed (docs/DEMO.md):

1. a small language and tokenizer (`demo_language`), a tiny GPT-2 fitted to samples of a
   prompt-conditional Markov chain: the SFT reference, saved under `demo/models/reference`;
2. for a LOW- and a HIGH-entropy target DID: per prompt, the reference's exact π_ref(y|x) over
   every response, q* (entropy set by a temperature, as in the lab), π* ∝ π_ref·q*,
   π_l ∝ π_ref^{1+β} π*^{−β}, pairs y_w ~ π_ref, y_l ~ π_l → `demo/data/{low,high}.jsonl`
   (TRL's standard format with an explicit prompt, plus `id`);
3. one TRL `DPOTrainer` run per dataset → `demo/runs/{low,high}/checkpoint-N` (TRL's layout);
4. `run_score` on each run (token-level DID entropy on) → runs `demo-low`, `demo-high`;
5. per run, `runs/<run>/exact_did.parquet`: per (prompt, checkpoint) the exact sequence-level DID
   entropy over every response, the policy's exact entropy, and the K-sample estimates beside them;
   run.json `extra` gets {"demo": true, "target_entropy": ..., ...}.

Progress: `progress(stage, done, total)`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from did_core.config import Progress
from did_core.demo_language import (
    Language,
    build_language_tokenizer,
    encode,
    entropy_rows,
    ground_truth_logprobs,
    response_logprobs,
    train_reference,
)
from did_core.lab import js, rejected_distribution, temperature_for_entropy

RUN_NAMES = {"low": "demo-low", "high": "demo-high"}
"""The two runs that contrast a low- and a high-entropy target DID (demo_summary, the figure)."""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. `DemoConfig.fast()` is the reduced build the tests use."""

    seed: int = 0
    n_prompts: int = 16
    pairs_per_prompt: int = 32
    beta: float = 0.5
    """DPO β, and the β of the power law that generates the pairs. At 0.1 the DID-encoding π_l is so close
    to π_ref that a few hundred pairs carry almost no signal (the lab's 1/β noise), and DPO fits noise."""
    low_entropy: float = 0.15
    """Target DID entropy of the low run, as a fraction of log R (R responses per prompt)."""
    high_entropy: float = 0.9
    low_alignment: float = 0.5
    """q*'s alignment with π_ref (lab.LabConfig.target_alignment): > 0 favours the reference's modes."""
    high_alignment: float = -0.5
    sft_steps: int = 150
    dpo_steps: int = 100
    save_every: int = 20
    dpo_lr: float = 5e-4
    dpo_batch_size: int = 32
    sweep_beta: float = 0.1
    """β of the third run: DPO on the low run's data at another β (a β sweep of two, for cross-run views)."""
    k_samples: int = 32
    n_boot: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.low_entropy < self.high_entropy < 1:
            raise ValueError("need 0 < low_entropy < high_entropy < 1 (fractions of log R)")
        if self.dpo_steps // self.save_every < 5:
            raise ValueError(f"need >= 5 checkpoints: dpo_steps / save_every = {self.dpo_steps / self.save_every}")
        if self.pairs_per_prompt < 1 or self.n_prompts < 1 or self.k_samples < 2:
            raise ValueError("pairs_per_prompt, n_prompts must be >= 1 and k_samples >= 2")

    @classmethod
    def fast(cls, seed: int = 0) -> DemoConfig:
        return cls(seed=seed, n_prompts=8, pairs_per_prompt=8, sft_steps=60, dpo_steps=10, save_every=2,
                   dpo_batch_size=16, k_samples=8, n_boot=50)


# ---------------------------------------------------------------- preference data (pure)


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
    """Both datasets from the reference's exact distribution: {"low"|"high": {"rows", "world"}}."""
    out = {}
    for k, (kind, frac, align) in enumerate((("low", cfg.low_entropy, cfg.low_alignment),
                                             ("high", cfg.high_entropy, cfg.high_alignment))):
        g = torch.Generator().manual_seed(30_000 + 100 * cfg.seed + k)
        world = target_world(log_ref, frac, align, cfg.beta, g)
        rows = sample_preference_pairs(lang.prompts(), [lang.completion(r) for r in lang.responses()], log_ref,
                                       world["log_rejected"],
                                       cfg.pairs_per_prompt, g, kind)
        out[kind] = {"rows": rows, "world": world, "fraction": frac, "alignment": align}
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------- DPO with TRL


def sweep_run_name(cfg: DemoConfig) -> str:
    """The third run's name: the low run's data at `cfg.sweep_beta` ("demo-low-beta0.1")."""
    return f"{RUN_NAMES['low']}-beta{cfg.sweep_beta:g}"


def demo_runs(cfg: DemoConfig) -> list[tuple[str, str, str, float]]:
    """(folder under demo/runs, run name, dataset kind, β) of every run the demo trains and scores."""
    return [("low", RUN_NAMES["low"], "low", cfg.beta), ("high", RUN_NAMES["high"], "high", cfg.beta),
            (f"low-beta{cfg.sweep_beta:g}", sweep_run_name(cfg), "low", cfg.sweep_beta)]


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


# ---------------------------------------------------------------- exact and K-sample DID entropies


def exact_did_table(run_manifest: dict, lang: Language, tokenizer, reference, ref_lp, target: dict,
                    cfg: DemoConfig) -> pd.DataFrame:
    """One row per (prompt, checkpoint): the exact sequence-level DID entropy over the language
    (`exact_did_entropy`) and over the sampler's whole support, language + cut sequences
    (`exact_did_entropy_support`: what the SNIS estimate targets), the policy's exact entropy and
    JS(π, π*) over the language, and the K-sample estimates (did_core.entropy.summarize_samples over
    K = cfg.k_samples responses drawn from the policy, cut after L+1 tokens) beside them."""
    from transformers import AutoModelForCausalLM

    from did_core.entropy import summarize_samples
    from did_core.sampling import sample_did_entropy

    prompts = lang.prompts()
    prompt_ids = [encode(tokenizer, p) for p in prompts]
    log_r = math.log(len(lang.responses()))
    ref_entropy = entropy_rows(ref_lp.logp).numpy()
    frames = []
    for ck in run_manifest["checkpoints"]:
        policy = AutoModelForCausalLM.from_pretrained(ck["path"]).eval()
        lp = response_logprobs(policy, tokenizer, lang)
        d = lp.logp - ref_lp.logp                                                 # (n, R) log-ratios
        frame = pd.DataFrame({
            "prompt_id": np.arange(len(prompts)), "prompt": prompts, "model": ck["name"], "step": ck["step"],
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


# ---------------------------------------------------------------- the whole build


def build_demo(workspace: str | Path, seed: int = 0, progress: Progress | None = None,
               config: DemoConfig | None = None) -> dict:
    """Build the demo workspace (idempotent: rebuilds models and runs, scoring reuses stored chunks).

    Returns a summary {"runs": [...], "timings": {stage: seconds}, ...}. Uses one torch thread while
    it runs (tiny models: more threads only contend).
    """
    from did_core.config import ScoreSettings
    from did_core.score import run_score
    from did_core.store import atomic_write_parquet
    from did_core.workspace import Workspace

    cfg = config or DemoConfig(seed=seed)
    say = progress or (lambda stage, done, total: None)
    root = Path(workspace)
    demo = root / "demo"
    import warnings

    import datasets.utils.logging as ds_logging
    import transformers.utils.logging as hf_logging

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    hf_bars, ds_bars = hf_logging.is_progress_bar_enabled(), ds_logging.is_progress_bar_enabled()
    hf_verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    ds_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        timings[name] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()

    try:
        warnings.filterwarnings("ignore", category=FutureWarning)
        lang = Language(n_prompts=cfg.n_prompts, seed=cfg.seed)
        tokenizer = build_language_tokenizer(lang)
        say("reference", 0, cfg.sft_steps)
        reference = train_reference(lang, tokenizer, ground_truth_logprobs(lang), steps=cfg.sft_steps, seed=cfg.seed,
                                    progress=lambda d, t: say("reference", d, t))
        ref_dir = demo / "models" / "reference"
        reference.save_pretrained(ref_dir)
        tokenizer.save_pretrained(ref_dir)
        lap("reference")

        say("data", 0, 2)
        ref_lp = response_logprobs(reference, tokenizer, lang)
        log_ref = torch.log_softmax(ref_lp.logp, -1)  # π_ref renormalised over the language
        data = make_preference_data(lang, log_ref, cfg)
        for kind, d in data.items():
            write_jsonl(demo / "data" / f"{kind}.jsonl", d["rows"])
        say("data", 2, 2)
        lap("data")

        for kind, _, source, beta in demo_runs(cfg):
            out = demo / "runs" / kind
            say(f"train {kind}", 0, cfg.dpo_steps)
            train_dpo(ref_dir, data[source]["rows"], out, cfg, beta=beta,
                      progress=lambda s, t, kind=kind: say(f"train {kind}", s, t))
            lap(f"train {kind}")

        ws = Workspace(root)
        settings = ScoreSettings(token_level=True)
        runs = []
        for kind, name, source, _ in demo_runs(cfg):
            d = data[source]
            run_score(str(demo / "data" / f"{source}.jsonl"), str(ref_dir), run_dir=str(demo / "runs" / kind),
                      workspace=root, settings=settings, name=name,
                      progress=lambda s, dn, t, kind=kind: say(f"score {kind}: {s}", dn, t))
            lap(f"score {kind}")
            manifest = ws.run(name)
            say(f"exact {kind}", 0, len(manifest["checkpoints"]))
            table = exact_did_table(manifest, lang, tokenizer, reference, ref_lp, d["world"], cfg)
            atomic_write_parquet(ws.run_dir(name) / "exact_did.parquet", pa.Table.from_pandas(table, preserve_index=False))
            manifest["extra"] = dict(manifest.get("extra") or {}) | {
                "demo": True, "target_entropy": d["fraction"],
                "target_entropy_nats": d["fraction"] * math.log(len(lang.responses())),
                "target_alignment": d["alignment"], "exact_did": "exact_did.parquet",
                "language": asdict(lang), "demo_config": asdict(cfg)}
            ws.write_run(manifest)
            say(f"exact {kind}", len(manifest["checkpoints"]), len(manifest["checkpoints"]))
            lap(f"exact {kind}")
            runs.append(name)
        say("done", 1, 1)
        return {"runs": runs, "timings": timings, "workspace": str(root)}
    finally:
        torch.set_num_threads(threads)
        hf_logging.set_verbosity(hf_verbosity)
        if hf_bars:
            hf_logging.enable_progress_bar()
        if ds_bars:
            ds_logging.enable_progress_bar()


def exact_did(workspace: str | Path, run: str) -> pd.DataFrame:
    """Read a demo run's exact_did.parquet (empty frame when the run has none)."""
    from did_core.workspace import Workspace

    path = Workspace(workspace).run_dir(run) / "exact_did.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


# ---------------------------------------------------------------- summary and figure


def demo_summary(workspace: str | Path) -> pd.DataFrame:
    """Per (run, step) means over the demo's pairs and prompts; step 0 is the reference.

    Columns: run, target_entropy, step, logp_chosen, logp_rejected (mean ℓ over pairs, engine scores),
    exact_did_entropy, exact_did_entropy_support, policy_entropy, js_target, language_mass (exact, mean
    over prompts), restricted_entropy, snis_entropy (K-sample estimates, NaN at step 0), and the
    targets target_did_entropy (H(q*)) and target_policy_entropy (H(π*)).
    """
    from did_core.workspace import Workspace

    ws = Workspace(workspace)
    rows = []
    for name in RUN_NAMES.values():
        run, pairs, table = ws.run(name), ws.pairs(name), exact_did(workspace, name)
        frac, spec = run["extra"]["target_entropy"], run["extra"]["language"]
        lang = Language(**{k: spec[k] for k in ("symbols", "eos", "max_len", "n_prompts", "seed")})
        n_support = len(lang.responses()) + len(lang.symbols) ** (lang.max_len + 1)  # DID uniform at step 0
        ref = table[table["step"] == table["step"].min()]
        targets = {"target_did_entropy": float(ref["target_did_entropy"].mean()),
                   "target_policy_entropy": float(ref["target_policy_entropy"].mean())}
        rows.append(targets | {"run": name, "target_entropy": frac, "step": 0,
                     "logp_chosen": pairs["ref_logp_chosen"].mean(), "logp_rejected": pairs["ref_logp_rejected"].mean(),
                     "exact_did_entropy": float(ref["max_did_entropy"].mean()),
                     "exact_did_entropy_support": math.log(n_support),
                     "policy_entropy": float(ref["ref_entropy"].mean()),
                     "js_target": float(ref["ref_js_target"].mean()),
                     "language_mass": float(ref["ref_language_mass"].mean()),
                     "restricted_entropy": np.nan, "snis_entropy": np.nan})
        per_pair = pairs.groupby("step")[["logp_chosen", "logp_rejected"]].mean()
        per_prompt = table.groupby("step")[["exact_did_entropy", "exact_did_entropy_support", "policy_entropy",
                                            "js_target", "language_mass", "restricted_entropy",
                                            "snis_entropy"]].mean()
        for step, r in per_pair.join(per_prompt).iterrows():
            rows.append(targets | {"run": name, "target_entropy": frac, "step": int(step)} | r.to_dict())
    return pd.DataFrame(rows)


def plot_demo_contrast(summary: pd.DataFrame, out: str | Path) -> None:
    """Six panels, both runs, step 0 = reference; dotted lines are the targets (π*, q*). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(16, 8.5))
    ax = ax.ravel()
    colors = {"demo-low": "tab:blue", "demo-high": "tab:orange"}
    for name, g in summary.groupby("run", sort=False):
        c, lab = colors.get(name, "gray"), f"{name} (H(q*) = {g['target_entropy'].iloc[0]:.2f}·log R)"
        ax[0].plot(g["step"], g["logp_chosen"], "o-", color=c, label=f"{lab}: chosen")
        ax[0].plot(g["step"], g["logp_rejected"], "s--", color=c, alpha=0.6, label=f"{name}: rejected")
        ax[1].plot(g["step"], g["policy_entropy"], "o-", color=c, label=lab)
        ax[1].axhline(g["target_policy_entropy"].iloc[0], color=c, ls=":", label=f"{name}: H(π*)")
        ax[2].plot(g["step"], g["language_mass"], "o-", color=c, label=lab)
        ax[3].plot(g["step"], g["exact_did_entropy"], "o-", color=c, label=f"{name}: exact")
        ax[3].axhline(g["target_did_entropy"].iloc[0], color=c, ls=":", label=f"{name}: H(q*)")
        ax[4].plot(g["step"], g["exact_did_entropy_support"], "o-", color=c, label=f"{name}: exact (support)")
        ax[4].plot(g["step"], g["snis_entropy"], "^--", color=c, alpha=0.8, label=f"{name}: SNIS estimate")
        ax[4].plot(g["step"], g["restricted_entropy"], "x:", color=c, alpha=0.8, label=f"{name}: H_S over K")
        ax[5].plot(g["step"], g["js_target"], "o-", color=c, label=lab)
    titles = ["mean log-likelihood of chosen / rejected (nats)", "policy entropy over the language (nats)",
              "mass on the language", "exact DID entropy over the language (nats)",
              "DID entropy over the sampler's support: exact vs K = 32 samples", "JS(π, π*) over the language"]
    for a, t in zip(ax, titles):
        a.set_title(t, fontsize=10)
        a.set_xlabel("DPO step (0 = reference)")
        a.legend(fontsize=7)
    fig.suptitle("Demo: TRL DPO on DID-encoding pairs at a low vs a high target DID entropy "
                 "(means over 16 prompts / 512 pairs; dotted: targets)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Build the demo workspace and/or draw its contrast figure.")
    ap.add_argument("--workspace", default="workspace")
    ap.add_argument("--build", action="store_true", help="build the demo first")
    ap.add_argument("--figure", help="write the contrast figure here (needs matplotlib)")
    a = ap.parse_args()
    if a.build:
        t = time.perf_counter()
        print(build_demo(a.workspace), f"{time.perf_counter() - t:.1f} s")
    s = demo_summary(a.workspace)
    print(s.round(3).to_string(index=False))
    if a.figure:
        plot_demo_contrast(s, a.figure)
        print(f"wrote {a.figure}")
