"""The `score` job: dataset -> TRL tokens -> engine -> chunked store, resumable and shardable.

Every input is validated and every model loaded before the first byte is written, so a bad input
leaves the workspace as it was. Work is cut into fixed chunks of pairs (in dataset order); a chunk
is written atomically once all its models are scored, so a killed job resumes at the first missing
chunk and a finished job computes nothing. Under `torchrun`, ranks take chunks round-robin and
rank 0 gathers and writes them: no two processes ever write the same file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from did_core import chunked
from did_core.config import ModelSpec, ScoreSettings
from did_core.data import PreferenceData, load_preference_data
from did_core.engine import score_batch_models
from did_core.errors import InputError
from did_core.fingerprints import check_same_tokenizer, model_fingerprint, tokenizer_fingerprint
from did_core.models import load_model, resolve_device
from did_core.plan import (
    approximation_notes,
    default_run_name,
    plan_models,
    resolve_numerics,
    resolve_settings,
)
from did_core.sweep import trainer_args
from did_core.tokenization import TokenizedPair, tokenize_pairs, truncation_report
from did_core.trainer_numerics import precision_supported, trainer_batches
from did_core.workspace import Workspace, validate_name

Progress = Callable[[str, int, int], None]


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


def run_score(data: str, reference: str, *, policies: list[str] | None = None, run_dir: str | None = None,
              workspace: str | Path = "workspace", settings: ScoreSettings | None = None,
              overrides: Mapping[str, Any] | None = None, numerics: Sequence[str] | str | None = None,
              name: str | None = None, column_map: dict[str, str] | None = None,
              progress: Progress | None = None, dtype_check_pairs: int = 8, pi_l: str | None = None) -> ScoreStats:
    """Score `data` with `reference` and every policy; store the results; return what was done.

    The run's settings (β, max length, loss, precision, …) are the trainer's, read from `run_dir`,
    except those in `overrides` (RunSettings field → value), which are recorded as overrides beside
    the trainer's value. `numerics`: "exact", "trainer", "both" or None (both when the trainer ran in
    reduced precision). A run in reduced `settings.dtype` re-scores its first `dtype_check_pairs` pairs
    in float32 and reports the largest error (`ScoreStats.dtype_check`). Raises InputError (before
    writing anything) for bad data, models or settings.
    """
    settings = settings or ScoreSettings()
    say = progress or (lambda stage, done, total: None)
    rank, world = chunked.dist_rank_world()
    ws = Workspace(workspace)
    ref_spec, specs, info = plan_models(reference, policies, run_dir, pi_l)
    resolved = resolve_settings(info, overrides)
    rs = resolved.settings
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
    pdata: PreferenceData = load_preference_data(data, column_map=column_map, limit=settings.limit)
    ref_model, tokenizer = load_model(ref_spec, settings)
    models = []
    for i, spec in enumerate(specs):
        m, tok = load_model(spec, settings)
        check_same_tokenizer(tokenizer, tok, spec.name)
        models.append(m)
        say("load", i + 2, 1 + len(specs))
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
    pol_fps = [chunked.policy_fingerprints(pdata.fingerprint, mfp, tok_fp, fields, ref_fp) for mfp in pol_model_fps]

    n_chunks = chunked.n_chunks(len(pairs), size)
    if rank == 0:
        ws.remove_orphaned_temps()  # what a killed job left mid-write
        ws.write_dataset(pdata)
    common = {"dataset": pdata.fingerprint, "n_pairs": len(pairs), "chunk_size": size,
              "n_chunks": n_chunks, "tokenizer": tok_fp}
    stores: list[chunked.Target] = []
    for nm in wanted:
        stores.append(chunked.Target(nm, None, ws.score_store(ref_fp[nm], chunked.store_meta(
            common, fields, nm, asdict(ref_spec), None, ref_model_fp))))
        for i, (fp, s, mfp) in enumerate(zip(pol_fps, specs, pol_model_fps, strict=True)):
            stores.append(chunked.Target(nm, i, ws.score_store(fp[nm], chunked.store_meta(
                common, fields, nm, asdict(s), ref_fp[nm], mfp))))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    job = chunked.ChunkJob(
        reference=ref_model, models=models, pairs=pairs, chunk_size=size,
        batches=trainer_batches(pairs, rs.eval_batch_size, rs.max_length, rs.truncation_mode), settings=settings,
        rs=rs, device=device, dtype=getattr(torch, settings.resolved_dtype), pad_id=pad_id,
        pieces=chunked.token_strings(tokenizer, pairs))
    total_pairs = len(pairs)
    t0 = time.perf_counter()
    chunks_computed = chunked.run_chunks(job, stores, [t.store.done_chunks() for t in stores], rank, world,
                                         progress=lambda n: say("score", n, total_pairs))
    exact_stores = [t.store for t in stores if t.numerics == "exact"]
    dtype_report = None
    if rank == 0 and settings.resolved_dtype != "float32" and specs and dtype_check_pairs > 0 and exact_stores:
        say("check", 0, 1)
        dtype_report = reduced_precision_error(ref_spec, specs[0], pairs[:dtype_check_pairs], exact_stores[0],
                                               exact_stores[1], settings)
        say("check", 1, 1)
    if rank == 0:
        for t in stores:
            if chunks_computed or not t.store.meta().get("complete"):
                t.store.mark_complete()
        ws.write_run(chunked.run_manifest(
            run_name, pdata, data, pairs, resolved, fields, wanted, notes, settings.resolved_dtype, device.type,
            reference=chunked.model_entry(ref_spec.name, ref_spec.path, None, ref_fp, wanted),
            checkpoints=[chunked.model_entry(s.name, s.path, s.step, fp, wanted)
                         for s, fp in zip(specs, pol_fps, strict=True)],
            log_history=info.log_history if info else [],
            extra={"elapsed_s": time.perf_counter() - t0, "dtype_check": dtype_report,
                   "pi_l": str(pi_l) if pi_l else None,
                   "trainer_args": trainer_args(info.training_args if info else None)}))
    chunked.barrier(world)
    say("done", total_pairs, total_pairs)
    return ScoreStats(run=run_name, n_pairs=len(pairs), chunks_total=n_chunks, chunks_computed=chunks_computed,
                      truncation=truncation_report(pairs), dtype_check=dtype_report, numerics=wanted,
                      overrides=tuple(resolved.notes()), notes=tuple(notes))


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
