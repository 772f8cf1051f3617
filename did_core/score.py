"""The `score` job: dataset -> TRL tokens -> engine -> chunked store, resumable and shardable.

Every input is validated and every model loaded before the first byte is written, so a bad input
leaves the workspace as it was. Work is cut into fixed chunks of pairs (in dataset order); a chunk
is written atomically once all its models are scored, so a killed job resumes at the first missing
chunk and a finished job computes nothing. Under `torchrun`, ranks take chunks round-robin and
rank 0 gathers and writes them: no two processes ever write the same file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from did_core.config import ModelSpec, ScoreSettings
from did_core.data import PreferenceData, load_preference_data
from did_core.engine import PairScores, empty_pair, score_batch_models
from did_core.errors import InputError
from did_core.models import (
    check_same_tokenizer,
    load_model,
    model_fingerprint,
    resolve_device,
    tokenizer_fingerprint,
)
from did_core.plan import (
    approximation_notes,
    default_run_name,
    plan_models,
    resolve_numerics,
    resolve_settings,
)
from did_core.run_settings import RunSettings
from did_core.store import fingerprint
from did_core.sweep import trainer_args
from did_core.tokenization import TokenizedPair, tokenize_pairs, truncation_report
from did_core.trainer_numerics import precision_supported, score_trainer_batches, trainer_batches
from did_core.workspace import Workspace, validate_name

Progress = Callable[[str, int, int], None]
CHUNK_SIZE = 128  # pairs per stored chunk: the unit of resume


def _chunk_size() -> int:
    """Pairs per chunk; `DID_CHUNK_SIZE` overrides it (tests use small chunks to kill jobs mid-way)."""
    return int(os.environ.get("DID_CHUNK_SIZE", CHUNK_SIZE))


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


def _template_hash(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return fingerprint("chat-template", template)[:12] if template else None


def _token_strings(tokenizer, pairs: Sequence[TokenizedPair]) -> dict[int, str]:
    """Decoded text of every token id that occurs in a response (decoded one id at a time)."""
    ids = {t for p in pairs for t in (*p.chosen_ids, *p.rejected_ids)}
    return {i: tokenizer.decode([i]) for i in ids}


def _chunk_frames(pairs: Sequence[TokenizedPair], scores: Sequence[PairScores], pieces: dict[int, str],
                  with_entropy: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One model's scores for one chunk as the store's pairs and tokens tables (ARCHITECTURE.md)."""
    rows, tok_cols = [], {k: [] for k in ("pair_id", "side", "position", "token_id", "token", "logp",
                                          "did_entropy")}
    for p, s in zip(pairs, scores, strict=True):
        row = {"pair_id": p.pair_id}
        for side, ids, r, dropped in (("chosen", p.chosen_ids, s.chosen, p.chosen_dropped),
                                      ("rejected", p.rejected_ids, s.rejected, p.rejected_dropped)):
            ent = r.did_entropy if (with_entropy and r.did_entropy is not None) else None
            row |= {f"logp_{side}": float(r.logp_sum), f"n_tokens_{side}": len(ids), f"dropped_{side}": dropped,
                    f"did_entropy_{side}": float(np.mean(ent)) if ent is not None and len(ent) else np.nan,
                    f"did_entropy_max_{side}": float(np.max(ent)) if ent is not None and len(ent) else np.nan}
            n = len(ids)
            tok_cols["pair_id"] += [p.pair_id] * n
            tok_cols["side"] += [side] * n
            tok_cols["position"] += list(range(n))
            tok_cols["token_id"] += list(ids)
            tok_cols["token"] += [pieces[i] for i in ids]
            tok_cols["logp"] += list(np.asarray(r.token_logps, dtype=np.float32))
            tok_cols["did_entropy"] += list(ent) if ent is not None else [np.nan] * n
        rows.append(row)
    pairs_df = pd.DataFrame(rows)
    tokens_df = pd.DataFrame(tok_cols).astype({"position": "int32", "token_id": "int32", "logp": "float32",
                                               "did_entropy": "float32"})
    return pairs_df, tokens_df


def _dist() -> tuple[int, int]:
    """(rank, world size): from torch.distributed when launched by torchrun, else (0, 1)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
    rank, world = _dist()
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
    resolved = resolve_settings(info, overrides, _template_hash(tokenizer))
    say("tokenize", 0, len(pdata.pairs))
    pairs = tokenize_pairs(pdata, tokenizer, rs.max_length)
    _check_truncation_mode(pairs, rs)
    say("tokenize", len(pairs), len(pdata.pairs))

    # Fingerprints: the reference's numbers do not depend on token_level; a policy's entropy does,
    # and it depends on the reference, so the policy key includes the reference key.
    tok_fp = tokenizer_fingerprint(tokenizer)
    chunk_size = _chunk_size()
    # The chunk size fixes which pairs form chunk c, so resuming needs the same one: key on it too.
    fields = settings.fingerprint_fields() | {"max_length": rs.max_length, "chunk_size": chunk_size}
    if rs.truncation_mode != "keep_start":  # (keep_start is left out so older fingerprints stay valid)
        fields["truncation_mode"] = rs.truncation_mode
    trainer_fields = {k: v for k, v in fields.items() if k != "token_level"} | rs.trainer_numerics_fields() | {
        "numerics": "trainer", "device": device.type}
    ref_model_fp = model_fingerprint(ref_spec.path)
    pol_model_fps = [model_fingerprint(s.path) for s in specs]
    ref_fp = {"exact": fingerprint("reference", pdata.fingerprint, ref_model_fp, tok_fp,
                                   {k: v for k, v in fields.items() if k != "token_level"}),
              "trainer": fingerprint("reference", pdata.fingerprint, ref_model_fp, tok_fp, trainer_fields)}
    pol_fps = [{"exact": fingerprint("policy", pdata.fingerprint, mfp, tok_fp, fields, ref_fp["exact"]),
                "trainer": fingerprint("policy", pdata.fingerprint, mfp, tok_fp, trainer_fields, ref_fp["trainer"])}
               for mfp in pol_model_fps]

    n_chunks = max(1, -(-len(pairs) // chunk_size))
    chunks_computed = 0
    if rank == 0:
        ws.remove_orphaned_temps()  # what a killed job left mid-write
        ws.write_dataset(pdata)
    common = {"dataset": pdata.fingerprint, "n_pairs": len(pairs), "chunk_size": chunk_size,
              "n_chunks": n_chunks, "tokenizer": tok_fp}
    stores: list[_Target] = []
    for nm in wanted:
        meta = common | {"settings": fields if nm == "exact" else trainer_fields, "numerics": nm}
        stores.append(_Target(nm, None, ws.score_store(ref_fp[nm], meta | {
            "model": asdict(ref_spec), "reference_score": None, "model_fingerprint": ref_model_fp})))
        for i, (fp, s, mfp) in enumerate(zip(pol_fps, specs, pol_model_fps, strict=True)):
            stores.append(_Target(nm, i, ws.score_store(fp[nm], meta | {
                "model": asdict(s), "reference_score": ref_fp[nm], "model_fingerprint": mfp})))
    pieces = _token_strings(tokenizer, pairs)
    dtype = getattr(torch, settings.resolved_dtype)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = trainer_batches(pairs, rs.eval_batch_size, rs.max_length, rs.truncation_mode)

    done = [t.store.done_chunks() for t in stores]
    todo = [c for c in range(n_chunks) if any(c not in d for d in done)]
    total_pairs = len(pairs)
    finished = total_pairs - sum(len(_chunk(pairs, c, chunk_size)) for c in todo)
    say("score", finished, total_pairs)
    t0 = time.perf_counter()
    # Each round every rank scores one chunk; rank 0 gathers and writes them.
    for round_start in range(0, len(todo), world):
        mine = todo[round_start + rank] if round_start + rank < len(todo) else None
        result = None
        if mine is not None:
            need = [k for k, d in enumerate(done) if mine not in d]
            base = finished
            result = (mine, _score_chunk(
                [stores[k] for k in need], need, ref_model, models, pairs, mine, chunk_size, batches, settings, rs,
                device, dtype, pad_id,
                progress=(lambda n, base=base: say("score", base + n, total_pairs)) if world == 1 else None))
        results = _gather(result, rank, world)
        if rank == 0:
            for res in results:
                if res is None:
                    continue
                c, scored = res
                chunk_pairs = _chunk(pairs, c, chunk_size)
                for k, sc in scored.items():
                    entropy = settings.token_level and stores[k].numerics == "exact" and stores[k].policy is not None
                    stores[k].store.write_chunk(c, *_chunk_frames(chunk_pairs, sc, pieces, entropy))
                chunks_computed += 1
                finished += len(chunk_pairs)
                if os.environ.get("DID_TEST_CHUNK_DELAY"):  # lets fault tests kill -9 between chunks
                    time.sleep(float(os.environ["DID_TEST_CHUNK_DELAY"]))
        say("score", finished, total_pairs)
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

        def scores(fps: dict) -> dict:
            return {nm: fps[nm] for nm in wanted}
        primary = wanted[0]
        ws.write_run({
            "name": run_name, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset": {"fingerprint": pdata.fingerprint, "source": str(data), "n_pairs": len(pairs),
                        "conversational": pdata.conversational},
            "beta": rs.beta, "settings": fields, "run_settings": resolved.to_manifest(),
            "settings_origin": resolved.origin, "overrides": resolved.notes(), "notes": notes,
            "numerics": list(wanted),
            "numerics_detail": {"exact": {"dtype": settings.resolved_dtype, "sums": "float64"},
                                "trainer": {"precision": rs.precision, "device": device.type,
                                            "eval_batch_size": rs.eval_batch_size, "sums": "float32"}},
            "reference": {"name": ref_spec.name, "path": ref_spec.path, "step": None, "score": ref_fp[primary],
                          "scores": scores(ref_fp)},
            "checkpoints": [{"name": s.name, "path": s.path, "step": s.step, "score": fp[primary], "scores": scores(fp)}
                            for s, fp in zip(specs, pol_fps, strict=True)],
            "trainer_log_history": info.log_history if info else [],
            "extra": {"truncation": truncation_report(pairs), "elapsed_s": time.perf_counter() - t0,
                      "dtype_check": dtype_report, "pi_l": str(pi_l) if pi_l else None,
                      "trainer_args": trainer_args(info.training_args if info else None)},
        })
    _barrier(world)
    say("done", total_pairs, total_pairs)
    return ScoreStats(run=run_name, n_pairs=len(pairs), chunks_total=n_chunks, chunks_computed=chunks_computed,
                      truncation=truncation_report(pairs), dtype_check=dtype_report, numerics=wanted,
                      overrides=tuple(resolved.notes()), notes=tuple(notes))


@dataclass(frozen=True)
class _Target:
    """One store a job fills: the reference (`policy` None) or policy i, in one numerics."""

    numerics: str
    policy: int | None
    store: Any


def _score_chunk(targets: Sequence[_Target], keys: Sequence[int], ref_model, models, pairs, c: int, chunk_size: int,
                 batches: Sequence[Sequence[int]], settings: ScoreSettings, rs: RunSettings, device, dtype, pad_id: int,
                 progress=None) -> dict[int, list[PairScores]]:
    """Scores of chunk `c` for every target that lacks it: {target key: one PairScores per chunk pair}."""
    chunk_pairs = _chunk(pairs, c, chunk_size)
    out: dict[int, list[PairScores]] = {}
    exact = [(k, t) for k, t in zip(keys, targets, strict=True) if t.numerics == "exact"]
    if exact:
        need = [t.policy for _, t in exact if t.policy is not None]
        score_ref = any(t.policy is None for _, t in exact)
        ref_scores, pol_scores = score_batch_models(
            ref_model, [models[i] for i in need], chunk_pairs, token_level=settings.token_level,
            score_reference=score_ref, token_budget=settings.budget_for(device.type), device=device, dtype=dtype,
            progress=progress)
        by_policy = dict(zip(need, pol_scores, strict=True))
        for k, t in exact:
            out[k] = ref_scores if t.policy is None else by_policy[t.policy]  # type: ignore[assignment]
    trainer = [(k, t) for k, t in zip(keys, targets, strict=True) if t.numerics == "trainer"]
    if trainer:
        lo, hi = c * chunk_size, c * chunk_size + len(chunk_pairs)
        mine = [b for b in batches if any(lo <= i < hi for i in b)]  # a batch across two chunks runs in both
        scored = score_trainer_batches(
            [ref_model if t.policy is None else models[t.policy] for _, t in trainer], pairs, mine,
            precision=rs.precision, max_length=rs.max_length, truncation_mode=rs.truncation_mode,
            pad_to_multiple_of=rs.pad_to_multiple_of, pad_token_id=pad_id, device=device)
        for (k, _), per_pair in zip(trainer, scored, strict=True):
            out[k] = [per_pair.get(i) or empty_pair(False) for i in range(lo, hi)]
    return out


def _check_truncation_mode(pairs: Sequence[TokenizedPair], rs: RunSettings) -> None:
    """keep_end (deprecated in TRL 1.16) cuts chosen and rejected prompts differently: refuse it when it cuts."""
    if rs.truncation_mode == "keep_end":
        cut = sum(1 for p in pairs if p.chosen_dropped or p.rejected_dropped or len(p.prompt_ids) >= (rs.max_length or 0))
        if cut:
            raise InputError(f"truncation_mode keep_end is not supported: {cut} pairs are longer than max length "
                             f"{rs.max_length}; give --max-length none, or --truncation-mode keep_start to score them "
                             "differently from the trainer")


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


def _chunk(pairs: Sequence[TokenizedPair], c: int, size: int) -> Sequence[TokenizedPair]:
    return pairs[c * size:(c + 1) * size]


def _gather(result, rank: int, world: int) -> list:
    if world == 1:
        return [result]
    import torch.distributed as dist

    out = [None] * world if rank == 0 else None
    dist.gather_object(result, out, dst=0)
    return out or []


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
