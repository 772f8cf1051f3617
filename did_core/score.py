"""The `score` job: dataset -> TRL tokens -> engine -> chunked store, resumable and shardable.

`plan_score` decides and checks everything before a model is loaded or a byte written (data,
settings, every checkpoint's tokenizer and weight files, the memory two models need), so a bad input
leaves the workspace as it was; `execute` runs the plan. Work is cut into fixed chunks of pairs (in
dataset order) and scored checkpoint by checkpoint: the reference stays loaded, each policy is loaded
in its turn and dropped after, so memory does not grow with the number of checkpoints. A chunk is
written atomically per model, so a killed job resumes where it stopped and a finished job computes
nothing. Under `torchrun` (`distributed.py`), ranks take chunks round-robin and rank 0 gathers and
writes them: no two processes ever write the same file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from did_core import chunked, distributed
from did_core.config import ModelSpec, Progress, ScoreSettings
from did_core.data import PreferenceData, load_preference_data
from did_core.engine import score_batch_models
from did_core.errors import InputError
from did_core.fingerprints import check_same_tokenizer, model_fingerprint, tokenizer_fingerprint
from did_core.manifest import RunManifest
from did_core.memory import DTYPE_BYTES, MemoryPlan, hidden_size, plan_memory
from did_core.models import load_model, load_tokenizer, resolve_device
from did_core.plan import (
    approximation_notes,
    default_run_name,
    plan_models,
    resolve_numerics,
    resolve_settings,
)
from did_core.run_settings import ResolvedSettings
from did_core.sweep import trainer_args
from did_core.token_audit import audit_for_manifest
from did_core.tokenization import TokenizedPair, tokenize_pairs, truncation_report
from did_core.trainer_numerics import precision_supported, trainer_batches
from did_core.workspace import Workspace, validate_name


@dataclass(frozen=True)
class ScoreStats:
    """What a finished job did, for the CLI's summary line and the tests (count, don't time)."""

    run: str
    n_pairs: int
    chunks_total: int
    chunks_computed: int
    truncation: dict
    dtype_check: dict | None = None
    """For a reduced-precision run: the largest errors against a float32 re-score of a sample."""
    numerics: tuple[str, ...] = ("exact",)
    overrides: tuple[str, ...] = ()
    """One sentence per setting given instead of the trainer's."""
    notes: tuple[str, ...] = ()
    """Approximations and fallbacks, said out loud."""
    memory: str = ""
    """The memory budget and how it was shared out (`memory.MemoryPlan.describe`)."""


@dataclass(frozen=True)
class ScorePlan:
    """Everything a score job decides before it loads a model or writes a byte (`plan_score`)."""

    run_name: str
    source: str
    """The dataset as given (path or hub id)."""
    data: PreferenceData
    pairs: Sequence[TokenizedPair]
    reference: ModelSpec
    policies: Sequence[ModelSpec]
    info: Any
    """`trl_run.RunInfo` of the run folder, or None."""
    resolved: ResolvedSettings
    wanted: tuple[str, ...]
    settings: ScoreSettings
    device: Any
    notes: tuple[str, ...]
    fields: dict[str, dict]
    chunk_size: int
    ref_model_fp: str
    ref_fp: dict[str, str]
    pol_fps: Sequence[dict[str, str]]
    pol_model_fps: Sequence[str]
    tokenizer_fp: str
    pad_id: int
    pieces: dict[int, str]
    memory: MemoryPlan
    pi_l: str | None = None
    audit: dict = field(default_factory=dict)
    """The tokenization audit of `pairs` (`token_audit`), recorded as run.json's `extra.audit`."""

    @property
    def n_chunks(self) -> int:
        return chunked.n_chunks(len(self.pairs), self.chunk_size)


def plan_score(data: str, reference: str, *, policies: list[str] | None = None, run_dir: str | None = None,
               settings: ScoreSettings | None = None, overrides: Mapping[str, Any] | None = None,
               numerics: Sequence[str] | str | None = None, name: str | None = None,
               column_map: dict[str, str] | None = None, pi_l: str | None = None,
               progress: Progress | None = None) -> ScorePlan:
    """Decide and check a job: the specs, the run's settings (the trainer's unless overridden), the data
    and its tokens, every tokenizer (all must match the reference's), the fingerprints and the memory.
    Loads no weights and writes nothing; every problem is an InputError here."""
    settings = settings or ScoreSettings()
    say = progress or (lambda stage, done, total: None)
    ref_spec, specs, info = plan_models(reference, policies, run_dir, pi_l)
    rs = resolve_settings(info, overrides).settings
    wanted = resolve_numerics(numerics, rs)
    run_name = name or default_run_name(ref_spec, specs, run_dir, data)
    validate_name(run_name)
    device = resolve_device(settings)
    notes = approximation_notes(rs)
    if "trainer" in wanted:
        ok, why = precision_supported(device, rs.precision)
        if not ok and numerics not in (None, "auto"):
            raise InputError(f"--numerics trainer needs {rs.precision} autocast, but {why}")
        if not ok:
            wanted = tuple(n for n in wanted if n != "trainer")
            notes.append(f"trainer numerics not computed: the trainer used {rs.precision} autocast and {why}")
    say("load", 0, 1 + len(specs))
    pdata = load_preference_data(data, column_map=column_map, limit=settings.limit)
    tokenizer = load_tokenizer(ref_spec, settings)
    for i, spec in enumerate(specs):
        check_same_tokenizer(tokenizer, load_tokenizer(spec, settings), spec.name)
        say("load", i + 2, 1 + len(specs))
    memory = plan_memory(ref_spec.path, [s.path for s in specs], settings.resolved_dtype, device.type,
                         settings.max_memory)
    resolved = resolve_settings(info, overrides, chunked.template_hash(tokenizer))
    say("tokenize", 0, len(pdata.pairs))
    pairs = tokenize_pairs(pdata, tokenizer, rs.max_length)
    chunked.check_truncation_mode(pairs, rs)
    say("tokenize", len(pairs), len(pdata.pairs))
    tok_fp = tokenizer_fingerprint(tokenizer)
    size = chunked.chunk_size()
    fields = chunked.score_fields(settings, rs, size, device.type)
    ref_model_fp = model_fingerprint(ref_spec.path)
    pol_model_fps = [model_fingerprint(s.path) for s in specs]
    ref_fp = chunked.reference_fingerprints(pdata.fingerprint, ref_model_fp, tok_fp, fields)
    plan = ScorePlan(
        run_name=run_name, source=str(data), data=pdata, pairs=pairs, reference=ref_spec, policies=specs, info=info,
        resolved=resolved, wanted=wanted, settings=settings, device=device, notes=tuple(notes), fields=fields,
        chunk_size=size, ref_model_fp=ref_model_fp, ref_fp=ref_fp,
        pol_fps=[chunked.policy_fingerprints(pdata.fingerprint, m, tok_fp, fields, ref_fp) for m in pol_model_fps],
        pol_model_fps=pol_model_fps, tokenizer_fp=tok_fp,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        pieces=chunked.token_strings(tokenizer, pairs), memory=memory, pi_l=pi_l)
    return replace(plan, audit=audit_for_manifest(plan, tokenizer))


def _targets(plan: ScorePlan, ws: Workspace) -> list[chunked.Target]:
    """The stores the plan fills: per numerics, the reference's and each policy's."""
    common = {"dataset": plan.data.fingerprint, "n_pairs": len(plan.pairs), "chunk_size": plan.chunk_size,
              "n_chunks": plan.n_chunks, "tokenizer": plan.tokenizer_fp}
    out = []
    for nm in plan.wanted:
        out.append(chunked.Target(nm, None, ws.score_store(plan.ref_fp[nm], chunked.store_meta(
            common, plan.fields, nm, asdict(plan.reference), None, plan.ref_model_fp))))
        for i, (fp, s, mfp) in enumerate(zip(plan.pol_fps, plan.policies, plan.pol_model_fps, strict=True)):
            out.append(chunked.Target(nm, i, ws.score_store(fp[nm], chunked.store_meta(
                common, plan.fields, nm, asdict(s), plan.ref_fp[nm], mfp))))
    return out


def execute(plan: ScorePlan, workspace: str | Path = "workspace", *, progress: Progress | None = None,
            on_chunk: Callable[[int], None] | None = None, dtype_check_pairs: int = 8) -> ScoreStats:
    """Run a plan: the reference loaded once, each policy loaded in its turn and dropped after
    (`chunked.run_chunks`), every missing chunk scored and stored, then run.json.

    A run in reduced precision re-scores its first `dtype_check_pairs` pairs in float32 and reports the
    largest error (`ScoreStats.dtype_check`). `on_chunk(c)` runs after each stored chunk.
    """
    say = progress or (lambda stage, done, total: None)
    settings, rs = plan.settings, plan.resolved.settings
    rank, world = distributed.dist_rank_world()
    ws = Workspace(workspace)
    ref_model, _ = load_model(plan.reference, settings)
    say("load", 1, 1 + len(plan.policies))
    if rank == 0:
        ws.remove_orphaned_temps()  # what a killed job left mid-write
        ws.write_dataset(plan.data)
    stores = _targets(plan, ws)

    def loader(i: int) -> Callable[[], Any]:
        return lambda: load_model(plan.policies[i], settings)[0]

    job = chunked.ChunkJob(
        reference=ref_model, policies=[loader(i) for i in range(len(plan.policies))], pairs=plan.pairs,
        chunk_size=plan.chunk_size, batches=trainer_batches(plan.pairs, rs.eval_batch_size, rs.max_length,
                                                            rs.truncation_mode),
        settings=settings, rs=rs, device=plan.device, dtype=getattr(torch, settings.resolved_dtype),
        pad_id=plan.pad_id, pieces=plan.pieces, cache_bytes=plan.memory.cache,
        row_bytes=(hidden_size(plan.reference.path) or 0) * DTYPE_BYTES[settings.resolved_dtype])
    t0 = time.perf_counter()
    chunks_computed = chunked.run_chunks(job, stores, [t.store.done_chunks() for t in stores], rank, world,
                                         progress=lambda d, t: say("score", d, t), on_chunk=on_chunk)
    del job, ref_model  # the float32 check below loads two models of its own
    exact_stores = [t.store for t in stores if t.numerics == "exact"]
    dtype_report = None
    if rank == 0 and settings.resolved_dtype != "float32" and plan.policies and dtype_check_pairs > 0 and exact_stores:
        say("check", 0, 1)
        dtype_report = reduced_precision_error(plan.reference, plan.policies[0], plan.pairs[:dtype_check_pairs],
                                               exact_stores[0], exact_stores[1], settings)
        say("check", 1, 1)
    if rank == 0:
        for t in stores:
            if chunks_computed or not t.store.meta().get("complete"):
                t.store.mark_complete()
        ws.write_run(_manifest(plan, time.perf_counter() - t0, dtype_report))
    distributed.barrier(world)
    say("done", len(plan.pairs), len(plan.pairs))
    return ScoreStats(run=plan.run_name, n_pairs=len(plan.pairs), chunks_total=plan.n_chunks,
                      chunks_computed=chunks_computed, truncation=truncation_report(plan.pairs),
                      dtype_check=dtype_report, numerics=plan.wanted, overrides=tuple(plan.resolved.notes()),
                      notes=plan.notes, memory=plan.memory.describe())


def _manifest(plan: ScorePlan, elapsed_s: float, dtype_report: dict | None) -> RunManifest:
    info, wanted = plan.info, plan.wanted
    return chunked.run_manifest(
        plan.run_name, plan.data, plan.source, plan.pairs, plan.resolved, plan.fields, wanted, plan.notes,
        plan.settings.resolved_dtype, plan.device.type,
        reference=chunked.model_entry(plan.reference.name, plan.reference.path, None, plan.ref_fp, wanted),
        checkpoints=[chunked.model_entry(s.name, s.path, s.step, fp, wanted)
                     for s, fp in zip(plan.policies, plan.pol_fps, strict=True)],
        log_history=info.log_history if info else [],
        extra={"elapsed_s": elapsed_s, "dtype_check": dtype_report, "pi_l": str(plan.pi_l) if plan.pi_l else None,
               "memory": asdict(plan.memory), "audit": plan.audit,
               "trainer_args": trainer_args(info.training_args if info else None)})


def run_score(data: str, reference: str, *, policies: list[str] | None = None, run_dir: str | None = None,
              workspace: str | Path = "workspace", settings: ScoreSettings | None = None,
              overrides: Mapping[str, Any] | None = None, numerics: Sequence[str] | str | None = None,
              name: str | None = None, column_map: dict[str, str] | None = None,
              progress: Progress | None = None, dtype_check_pairs: int = 8, pi_l: str | None = None,
              on_chunk: Callable[[int], None] | None = None) -> ScoreStats:
    """Score `data` with `reference` and every policy; store the results; return what was done.

    `plan_score` then `execute`. The run's settings (β, max length, loss, precision, …) are the
    trainer's, read from `run_dir`, except those in `overrides` (RunSettings field → value), which are
    recorded as overrides beside the trainer's value. `numerics`: "exact", "trainer", "both" or None
    (both when the trainer ran in reduced precision); `settings.max_memory` is what the job may hold
    (default: 90% of free memory). Raises InputError (before writing anything) for bad data,
    models, settings or too little memory.
    """
    plan = plan_score(data, reference, policies=policies, run_dir=run_dir, settings=settings, overrides=overrides,
                      numerics=numerics, name=name, column_map=column_map, pi_l=pi_l, progress=progress)
    return execute(plan, workspace, progress=progress, on_chunk=on_chunk, dtype_check_pairs=dtype_check_pairs)


def reduced_precision_error(ref_spec: ModelSpec, spec: ModelSpec, sample: Sequence[TokenizedPair], ref_store,
                            pol_store, settings: ScoreSettings) -> dict:
    """Re-score `sample` in float32 and report the largest per-sequence error of the stored run.

    Errors are |ℓ − ℓ_fp32| of each response's log-prob and |d − d_fp32| of its log-ratio d = ℓ_π − ℓ_ref.
    """
    fp32 = replace(settings, dtype="float32")
    device = resolve_device(settings)
    ref_model, _ = load_model(ref_spec, fp32)
    model, _ = load_model(spec, fp32)
    ref_scores, (pol_scores,) = score_batch_models(
        ref_model, [model], sample, token_level=False, score_reference=True,
        token_budget=settings.budget_for(device.type), device=device, dtype=torch.float32)
    ids = [p.pair_id for p in sample]
    stored_ref = ref_store.read_pairs().set_index("pair_id").loc[ids]
    stored_pol = pol_store.read_pairs().set_index("pair_id").loc[ids]
    logp_err, ratio_err = 0.0, 0.0
    for i, (r, s) in enumerate(zip(ref_scores, pol_scores, strict=True)):
        for side in ("chosen", "rejected"):
            exact_ref, exact_pol = getattr(r, side).logp_sum, getattr(s, side).logp_sum
            got_ref, got_pol = stored_ref[f"logp_{side}"].iloc[i], stored_pol[f"logp_{side}"].iloc[i]
            logp_err = max(logp_err, abs(got_ref - exact_ref), abs(got_pol - exact_pol))
            ratio_err = max(ratio_err, abs((got_pol - got_ref) - (exact_pol - exact_ref)))
    return {"dtype": settings.resolved_dtype, "pairs": len(sample), "model": spec.name,
            "max_abs_logp_error": logp_err, "max_abs_log_ratio_error": ratio_err}
