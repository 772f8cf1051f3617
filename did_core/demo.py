"""The embedded demo workspace: real TRL DPO runs on a small language, scored, with exact DID entropies.

`build_demo(workspace)` (also `python -m did_core demo --workspace DIR`) does, deterministically from
a seed (docs/DEMO.md):

1. a small language and tokenizer (`demo_language`), a tiny GPT-2 fitted to samples of a
   prompt-conditional Markov chain: the SFT reference, saved under `demo/models/reference`;
2. for a LOW- and a HIGH-entropy target DID, preference pairs from the reference's exact
   distribution (`demo_data`) → `demo/data/{low,high}.jsonl` (TRL's standard format with an explicit
   prompt, plus `id`);
then, one run at a time (so the first run is in the workspace, and on the Runs page, while the
others still train):
3. a TRL `DPOTrainer` run: one per dataset, and a third on the low data at another β
   (`demo_training.train_dpo`) → `demo/runs/<folder>/checkpoint-N` (TRL's layout);
4. `run_score` on it (token-level DID entropy on) → runs `demo-low`, `demo-high`, `demo-low-beta0.1`;
5. its `runs/<run>/exact_did.parquet` (`demo_training.exact_did_table`): per (prompt, checkpoint)
   the exact sequence-level DID entropy over every response, the policy's exact entropy, and the
   K-sample estimates beside them; run.json `extra` gets {"demo": true, "target_entropy": ..., ...}.

It runs under `build_settings()`: one torch thread, quiet transformers/datasets, FutureWarnings
ignored, and the process's random states put back afterwards, all restored on exit. Progress:
`progress(stage, done, total)`. `demo_summary` gives the means that scripts/demo_figure.py draws.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from did_core.config import Progress
from did_core.demo_data import make_preference_data
from did_core.demo_language import (
    Language,
    ResponseLogprobs,
    build_language_tokenizer,
    ground_truth_logprobs,
    response_logprobs,
    train_reference,
)
from did_core.demo_training import exact_did_table, train_dpo
from did_core.files import atomic_write_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from did_core.manifest import RunManifest
    from did_core.workspace import Workspace

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


def sweep_run_name(cfg: DemoConfig) -> str:
    """The third run's name: the low run's data at `cfg.sweep_beta` ("demo-low-beta0.1")."""
    return f"{RUN_NAMES['low']}-beta{cfg.sweep_beta:g}"


def demo_runs(cfg: DemoConfig) -> list[tuple[str, str, str, float]]:
    """(folder under demo/runs, run name, dataset kind, β) of every run the demo trains and scores."""
    return [("low", RUN_NAMES["low"], "low", cfg.beta), ("high", RUN_NAMES["high"], "high", cfg.beta),
            (f"low-beta{cfg.sweep_beta:g}", sweep_run_name(cfg), "low", cfg.sweep_beta)]


# ---------------------------------------------------------------- process-wide settings


@contextmanager
def _restored(get: Callable[[], Any], put: Callable[[Any], None]) -> Iterator[None]:
    """Put back on exit what `get()` returns now."""
    saved = get()
    try:
        yield
    finally:
        put(saved)


def _progress_bar_switch(module: Any) -> Callable[[bool], None]:
    """`put` for a transformers/datasets `utils.logging` module's progress-bar flag."""
    return lambda on: module.enable_progress_bar() if on else module.disable_progress_bar()


@contextmanager
def build_settings() -> Iterator[None]:
    """The process-wide settings the build runs under, each restored on exit (also on an exception):

    - one torch thread (tiny models: more threads only contend);
    - transformers' logging at errors only, its and datasets' progress bars off (the caller's own
      progress is the output);
    - FutureWarnings ignored (TRL's and transformers' notes about their own next versions);
    - the global random states of `random`, NumPy and torch (CPU, and CUDA when initialised), which
      the SFT's `torch.manual_seed` and TRL's `set_seed` reseed, put back as they were.
    """
    import datasets.utils.logging as ds_logging
    import transformers.utils.logging as hf_logging

    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        stack.enter_context(torch.random.fork_rng(devices=cuda))
        for get, put in ((torch.get_num_threads, torch.set_num_threads),
                         (hf_logging.get_verbosity, hf_logging.set_verbosity),
                         (hf_logging.is_progress_bar_enabled, _progress_bar_switch(hf_logging)),
                         (ds_logging.is_progress_bar_enabled, _progress_bar_switch(ds_logging)),
                         (random.getstate, random.setstate), (np.random.get_state, np.random.set_state)):
            stack.enter_context(_restored(get, put))
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.set_num_threads(1)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        ds_logging.disable_progress_bar()
        yield


# ---------------------------------------------------------------- the build, step by step


@dataclass(frozen=True)
class _Reference:
    """The SFT reference and what the later steps read from it."""

    lang: Language
    tokenizer: PreTrainedTokenizerFast
    model: torch.nn.Module
    dir: Path
    logprobs: ResponseLogprobs
    """Its exact log π_ref over the language (and the ways out of it)."""


class _Laps:
    """Seconds per stage, each from the end of the previous one."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._t0, 2)
        self._t0 = now


def _sft_reference(ref_dir: Path, cfg: DemoConfig, say: Progress) -> _Reference:
    """Step 1: the language, its tokenizer and the SFT reference, saved to `ref_dir`."""
    lang = Language(n_prompts=cfg.n_prompts, seed=cfg.seed)
    tokenizer = build_language_tokenizer(lang)
    say("reference", 0, cfg.sft_steps)
    model = train_reference(lang, tokenizer, ground_truth_logprobs(lang), steps=cfg.sft_steps, seed=cfg.seed,
                            progress=lambda d, t: say("reference", d, t))
    model.save_pretrained(ref_dir)
    tokenizer.save_pretrained(ref_dir)
    return _Reference(lang, tokenizer, model, ref_dir, response_logprobs(model, tokenizer, lang))


def _write_preference_data(data_dir: Path, ref: _Reference, cfg: DemoConfig, say: Progress) -> dict[str, dict]:
    """Step 2: both datasets (`make_preference_data`), written to `data_dir/{low,high}.jsonl`."""
    say("data", 0, 2)
    log_ref = torch.log_softmax(ref.logprobs.logp, -1)  # π_ref renormalised over the language
    data = make_preference_data(ref.lang, log_ref, cfg)
    for kind, d in data.items():
        atomic_write_text(data_dir / f"{kind}.jsonl", "".join(json.dumps(r) + "\n" for r in d["rows"]))
    say("data", 2, 2)
    return data


def _write_exact_table(ws: Workspace, manifest: RunManifest, ref: _Reference, d: dict, cfg: DemoConfig) -> None:
    """Step 5 for one scored run: exact_did.parquet, and the demo's facts in run.json `extra`."""
    from did_core.store import atomic_write_parquet

    name = manifest.name
    table = exact_did_table(manifest, ref.lang, ref.tokenizer, ref.model, ref.logprobs, d["world"], cfg)
    atomic_write_parquet(ws.run_dir(name) / "exact_did.parquet", pa.Table.from_pandas(table, preserve_index=False))
    ws.write_run(manifest.replace(extra=dict(manifest.extra) | {
        "demo": True, "target_entropy": d["fraction"],
        "target_entropy_nats": d["fraction"] * math.log(len(ref.lang.responses())),
        "target_alignment": d["alignment"], "exact_did": "exact_did.parquet",
        "language": asdict(ref.lang), "demo_config": asdict(cfg)}))


def _build_runs(root: Path, ref: _Reference, data: dict[str, dict], cfg: DemoConfig, say: Progress,
                lap: _Laps) -> list[str]:
    """Steps 3–5, one run at a time: its TRL DPO run into `demo/runs/<folder>`, `run_score` on it, its exact
    table. A run is complete in the workspace before the next one trains, so the dashboard can show the
    first while the others are built (the numbers do not depend on the order: every training reseeds).
    Returns the run names."""
    from did_core.config import ScoreSettings
    from did_core.score import run_score
    from did_core.workspace import Workspace

    ws, settings, demo = Workspace(root), ScoreSettings(token_level=True), root / "demo"
    for kind, name, source, beta in demo_runs(cfg):
        say(f"train {kind}", 0, cfg.dpo_steps)
        train_dpo(ref.dir, data[source]["rows"], demo / "runs" / kind, cfg, beta=beta,
                  progress=lambda s, t, kind=kind: say(f"train {kind}", s, t))
        lap(f"train {kind}")
        run_score(str(demo / "data" / f"{source}.jsonl"), str(ref.dir), run_dir=str(demo / "runs" / kind),
                  workspace=root, settings=settings, name=name,
                  progress=lambda s, dn, t, kind=kind: say(f"score {kind}: {s}", dn, t))
        lap(f"score {kind}")
        manifest = ws.run(name)
        n = len(manifest.checkpoints)
        say(f"exact {kind}", 0, n)
        _write_exact_table(ws, manifest, ref, data[source], cfg)
        say(f"exact {kind}", n, n)
        lap(f"exact {kind}")
    return [name for _, name, _, _ in demo_runs(cfg)]


def build_demo(workspace: str | Path, seed: int = 0, progress: Progress | None = None,
               config: DemoConfig | None = None) -> dict:
    """Build the demo workspace (idempotent: rebuilds models and runs, scoring reuses stored chunks).

    Returns a summary {"runs": [...], "timings": {stage: seconds}, "workspace"}. Runs under
    `build_settings()`, so the process's settings are as before once it returns or raises.
    """
    cfg = config or DemoConfig(seed=seed)
    say = progress or (lambda stage, done, total: None)
    root = Path(workspace)
    demo = root / "demo"
    with build_settings():
        lap = _Laps()
        ref = _sft_reference(demo / "models" / "reference", cfg, say)
        lap("reference")
        data = _write_preference_data(demo / "data", ref, cfg, say)
        lap("data")
        runs = _build_runs(root, ref, data, cfg, say, lap)
        say("done", 1, 1)
    return {"runs": runs, "timings": lap.timings, "workspace": str(root)}


def exact_did(workspace: str | Path, run: str) -> pd.DataFrame:
    """Read a demo run's exact_did.parquet (empty frame when the run has none)."""
    from did_core.workspace import Workspace

    path = Workspace(workspace).run_dir(run) / "exact_did.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


# ---------------------------------------------------------------- the figure's numbers


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
        frac, spec = run.extra["target_entropy"], run.extra["language"]
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
