"""The `sample` job: K responses per prompt from a proposal, scored under a checkpoint and the
reference, for the sequence-level DID entropy estimators (docs/REFERENCE.md §3, estimator 2).

Samples are stored once per (dataset, policy score, reference score, sampling settings) under
`<workspace>/samples/<fp>.parquet` and registered in the run's manifest (`RunManifest.samples`, run.json's `samples`), so a
second request with the same settings samples nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from did_core.config import ModelSpec, Progress, ScoreSettings
from did_core.data import PreferenceData
from did_core.errors import InputError
from did_core.fingerprints import fingerprint
from did_core.manifest import RunManifest
from did_core.store import atomic_write_parquet
from did_core.tokenization import tokenize_pairs
from did_core.workspace import Workspace


@dataclass(frozen=True)
class SampleSettings:
    """How responses are sampled (temperature 1 and no truncation keep the estimator unbiased)."""

    k: int = 32
    """Samples per prompt (the paper uses 32)."""
    seed: int = 0
    proposal: str = "policy"
    """`policy` (the checkpoint) or `reference`."""
    max_new_tokens: int = 128
    """Responses are cut after this many tokens (a cut response has no EOS)."""
    limit: int | None = 64
    """Prompts sampled: the first N pairs of the run's dataset (None: all)."""
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k must be >= 2, got {self.k}")
        if self.proposal not in ("policy", "reference"):
            raise ValueError(f"proposal must be policy|reference, got {self.proposal!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def _prompt_ids(ws: Workspace, run: str, manifest: RunManifest, tokenizer, limit: int | None) -> tuple[list[str], list]:
    records = ws.dataset_records(run)
    if limit is not None:
        records = records.iloc[:limit]
    data = PreferenceData(pairs=records.reset_index(drop=True), conversational=bool(
        manifest.dataset.conversational), source=manifest.dataset.source, fingerprint=manifest.dataset.fingerprint)
    max_length = manifest.settings.get("max_length")
    pairs = tokenize_pairs(data, tokenizer, max_length)
    return [p.pair_id for p in pairs], [list(p.prompt_ids) for p in pairs]


def run_sample(workspace: str | Path, run: str, *, models: list[str] | None = None,
               sample: SampleSettings | None = None, settings: ScoreSettings | None = None,
               progress: Progress | None = None) -> list[dict]:
    """Sample and score for each named checkpoint of `run` (default: the last); return the manifest entries."""
    from did_core.models import load_model, resolve_device
    from did_core.sampling import engine_scorer, sample_did_entropy

    sample = sample or SampleSettings()
    settings = settings or ScoreSettings()
    say = progress or (lambda stage, done, total: None)
    ws = Workspace(workspace)
    ws.remove_orphaned_temps()  # what a killed job left mid-write
    manifest = ws.run(run)
    by_name = {c.name: c for c in manifest.checkpoints}
    if not by_name:
        raise InputError(f"run {run!r} has no checkpoints to sample from")
    pi_l = manifest.extra.get("pi_l")
    names = models or [[c.name for c in manifest.checkpoints if c.name != pi_l][-1]]
    for n in names:
        if n not in by_name:
            raise InputError(f"run {run!r} has no checkpoint {n!r}; it has {', '.join(by_name)}")
    ref_entry = manifest.reference
    reference, tokenizer = load_model(ModelSpec(ref_entry.name, ref_entry.path, "reference"), settings)
    pair_ids, prompts = _prompt_ids(ws, run, manifest, tokenizer, sample.limit)
    device = resolve_device(settings)
    scorer = engine_scorer(token_budget=settings.budget_for(device.type), device=device,
                           dtype=settings.resolved_dtype)
    entries = list(manifest.samples)
    for i, name in enumerate(names):
        entry = by_name[name]
        fp = fingerprint("samples", manifest.dataset.fingerprint, entry.score, ref_entry.score,
                         sample.__dict__)
        path = ws.root / "samples" / f"{fp}.parquet"
        say("sample", i, len(names))
        if not path.is_file():
            policy, _ = load_model(ModelSpec(name, entry.path, "policy", entry.step), settings)
            df = sample_did_entropy(policy, reference, tokenizer, prompts, sample.k, sample.seed,
                                    proposal=sample.proposal, max_new_tokens=sample.max_new_tokens,
                                    temperature=sample.temperature, scorer=scorer)
            df.insert(0, "pair_id", [pair_ids[j] for j in df["prompt_index"]])
            df["response_ids"] = [list(map(int, r)) for r in df["response_ids"]]
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_parquet(path, pa.Table.from_pandas(df, preserve_index=False))
        record = {"model": name, "step": entry.step, "samples": fp, **sample.__dict__}
        entries = [e for e in entries if not (e["model"] == name and e["samples"] == fp)] + [record]
    say("sample", len(names), len(names))
    # re-read: never clobber a manifest another job rewrote meanwhile
    ws.write_run(ws.run(run).replace(samples=tuple(entries)))
    return entries


def read_samples(workspace: str | Path, run: str) -> pd.DataFrame:
    """Every stored sample of `run`: one row per (model, pair, sample) with `model, step, k, seed, proposal`."""
    ws = Workspace(workspace)
    frames = []
    for e in ws.run(run).samples:
        path = ws.root / "samples" / f"{e['samples']}.parquet"
        if not path.is_file():
            continue
        df = pq.read_table(path).to_pandas()
        df.insert(0, "model", e["model"])
        df.insert(1, "step", e.get("step"))
        for key in ("k", "seed", "proposal"):
            df[key] = e[key]
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["model", "step", "pair_id", "prompt_index", "sample_index", "log_ratio", "logp_proposal"])


def sampled_entropy_summary(samples: pd.DataFrame, n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per (model, k, seed, proposal, pair): both sequence-level estimators with bootstrap intervals."""
    from did_core.entropy import summarize_samples

    if samples.empty:
        return pd.DataFrame()
    out = []
    for (model, step, _k, s, prop), g in samples.groupby(["model", "step", "k", "seed", "proposal"], dropna=False,
                                                          sort=False):
        summ = summarize_samples(g, group="pair_id", n_boot=n_boot, seed=seed)
        summ.insert(0, "model", model)
        summ.insert(1, "step", step)
        summ["proposal"] = prop
        summ["seed"] = s
        out.append(summ)
    return pd.concat(out, ignore_index=True)

