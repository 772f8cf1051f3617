"""What every scoring job shares: fingerprints, store metadata, the chunk loop and run.json.

Two jobs fill the store: the `score` command (`score.py`: models loaded from folders) and the live
callback (`callback.py`: the trainer's own models, at every evaluation). Both cut the tokenized
pairs into fixed chunks (in dataset order), score a chunk under every target that lacks it, and
write it atomically (`store.ScoreStore.write_chunk`); under torch.distributed the ranks take chunks
round-robin and rank 0 gathers and writes them, so no two processes ever write the same file.
Keeping one definition here is what makes a live step and `score --run` on the same weights
produce the same files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from did_core.config import ScoreSettings
from did_core.engine import PairScores, empty_pair, score_batch_models
from did_core.errors import InputError
from did_core.fingerprints import fingerprint
from did_core.run_settings import ResolvedSettings, RunSettings
from did_core.tokenization import TokenizedPair, truncation_report
from did_core.trainer_numerics import score_trainer_batches

CHUNK_SIZE = 128  # pairs per stored chunk: the unit of resume


def chunk_size() -> int:
    """Pairs per chunk; `DID_CHUNK_SIZE` overrides it (tests use small chunks to kill jobs mid-way)."""
    return int(os.environ.get("DID_CHUNK_SIZE", CHUNK_SIZE))


def n_chunks(n_pairs: int, size: int) -> int:
    return max(1, -(-n_pairs // size))


def chunk(pairs: Sequence[TokenizedPair], c: int, size: int) -> Sequence[TokenizedPair]:
    return pairs[c * size:(c + 1) * size]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- fingerprints --------------------------------------------------------------------------------------
def template_hash(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return fingerprint("chat-template", template)[:12] if template else None


def score_fields(settings: ScoreSettings, rs: RunSettings, size: int, device_type: str,
                 dtype: str | None = None) -> dict[str, dict]:
    """The settings that enter each numerics' fingerprints: {"exact": …, "trainer": …}.

    The chunk size fixes which pairs form chunk c, so resuming needs the same one: it is keyed on too.
    `dtype` replaces the exact numerics' dtype when the weights are not cast (the live callback).
    """
    fields = settings.fingerprint_fields() | {"max_length": rs.max_length, "chunk_size": size}
    if dtype is not None:
        fields["dtype"] = dtype
    if rs.truncation_mode != "keep_start":  # (keep_start is left out so older fingerprints stay valid)
        fields["truncation_mode"] = rs.truncation_mode
    trainer = {k: v for k, v in fields.items() if k != "token_level"} | rs.trainer_numerics_fields() | {
        "numerics": "trainer", "device": device_type}
    return {"exact": fields, "trainer": trainer}


def reference_fingerprints(dataset_fp: str, model_fp: str, tok_fp: str, fields: dict[str, dict]) -> dict[str, str]:
    """The reference's score fingerprint per numerics. Its numbers do not depend on token_level."""
    return {"exact": fingerprint("reference", dataset_fp, model_fp, tok_fp,
                                 {k: v for k, v in fields["exact"].items() if k != "token_level"}),
            "trainer": fingerprint("reference", dataset_fp, model_fp, tok_fp, fields["trainer"])}


def policy_fingerprints(dataset_fp: str, model_fp: str, tok_fp: str, fields: dict[str, dict],
                        ref_fps: dict[str, str]) -> dict[str, str]:
    """A policy's score fingerprint per numerics: its entropy depends on the reference, so its key has the reference's."""
    return {nm: fingerprint("policy", dataset_fp, model_fp, tok_fp, fields[nm], ref_fps[nm]) for nm in ("exact", "trainer")}


def store_meta(common: dict, fields: dict[str, dict], numerics: str, model: dict, reference_score: str | None,
               model_fp: str | None, **extra: Any) -> dict:
    """meta.json of one score (scores/<fp>/meta.json): what was scored, how, against what."""
    return common | {"settings": fields[numerics], "numerics": numerics, "model": model,
                     "reference_score": reference_score, "model_fingerprint": model_fp} | extra


def check_truncation_mode(pairs: Sequence[TokenizedPair], rs: RunSettings) -> None:
    """keep_end (deprecated in TRL 1.16) cuts chosen and rejected prompts differently: refuse it when it cuts."""
    if rs.truncation_mode == "keep_end":
        cut = sum(1 for p in pairs if p.chosen_dropped or p.rejected_dropped or len(p.prompt_ids) >= (rs.max_length or 0))
        if cut:
            raise InputError(f"truncation_mode keep_end is not supported: {cut} pairs are longer than max length "
                             f"{rs.max_length}; give --max-length none, or --truncation-mode keep_start to score them "
                             "differently from the trainer")


# -- the chunk loop ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One store a job fills: the reference (`policy` None) or policy i, in one numerics (`store`: None
    on ranks other than 0, which never write)."""

    numerics: str
    policy: int | None
    store: Any


@dataclass(frozen=True)
class ChunkJob:
    """What the chunk loop needs, fixed for one job: the models, the pairs and how to score them."""

    reference: Any
    models: Sequence[Any]
    pairs: Sequence[TokenizedPair]
    chunk_size: int
    batches: Sequence[Sequence[int]]
    """The trainer's eval batches (pair indices), for the trainer numerics."""
    settings: ScoreSettings
    rs: RunSettings
    device: Any
    dtype: Any
    pad_id: int
    pieces: dict[int, str]
    """Decoded text of every response token id (`token_strings`)."""


def token_strings(tokenizer, pairs: Sequence[TokenizedPair]) -> dict[int, str]:
    """Decoded text of every token id that occurs in a response (decoded one id at a time)."""
    ids = {t for p in pairs for t in (*p.chosen_ids, *p.rejected_ids)}
    return {i: tokenizer.decode([i]) for i in ids}


def chunk_frames(pairs: Sequence[TokenizedPair], scores: Sequence[PairScores], pieces: dict[int, str],
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


def score_chunk(job: ChunkJob, targets: Sequence[Target], keys: Sequence[int], c: int,
                progress: Callable[[int], None] | None = None) -> dict[int, list[PairScores]]:
    """Scores of chunk `c` for every target that lacks it: {target key: one PairScores per chunk pair}."""
    chunk_pairs = chunk(job.pairs, c, job.chunk_size)
    out: dict[int, list[PairScores]] = {}
    exact = [(k, t) for k, t in zip(keys, targets, strict=True) if t.numerics == "exact"]
    if exact:
        need = [t.policy for _, t in exact if t.policy is not None]
        score_ref = any(t.policy is None for _, t in exact)
        ref_scores, pol_scores = score_batch_models(
            job.reference, [job.models[i] for i in need], chunk_pairs, token_level=job.settings.token_level,
            score_reference=score_ref, token_budget=job.settings.budget_for(job.device.type), device=job.device,
            dtype=job.dtype, progress=progress)
        by_policy = dict(zip(need, pol_scores, strict=True))
        for k, t in exact:
            out[k] = ref_scores if t.policy is None else by_policy[t.policy]  # type: ignore[assignment]
    trainer = [(k, t) for k, t in zip(keys, targets, strict=True) if t.numerics == "trainer"]
    if trainer:
        lo, hi = c * job.chunk_size, c * job.chunk_size + len(chunk_pairs)
        mine = [b for b in job.batches if any(lo <= i < hi for i in b)]  # a batch across two chunks runs in both
        rs = job.rs
        scored = score_trainer_batches(
            [job.reference if t.policy is None else job.models[t.policy] for _, t in trainer], job.pairs, mine,
            precision=rs.precision, max_length=rs.max_length, truncation_mode=rs.truncation_mode,
            pad_to_multiple_of=rs.pad_to_multiple_of, pad_token_id=job.pad_id, device=job.device)
        for (k, _), per_pair in zip(trainer, scored, strict=True):
            out[k] = [per_pair.get(i) or empty_pair(False) for i in range(lo, hi)]
    return out


def run_chunks(job: ChunkJob, targets: Sequence[Target], done: Sequence[set[int]], rank: int, world: int,
               progress: Callable[[int], None] | None = None) -> int:
    """Score and store every chunk some target lacks (`done[k]`: chunks target k has); return how many.

    Each round every rank scores one chunk; rank 0 gathers and writes them. `progress(n)` gets the
    pairs finished so far (within a chunk too, on one process).
    """
    todo = [c for c in range(n_chunks(len(job.pairs), job.chunk_size)) if any(c not in d for d in done)]
    finished = len(job.pairs) - sum(len(chunk(job.pairs, c, job.chunk_size)) for c in todo)
    computed = 0
    if progress:
        progress(finished)
    for round_start in range(0, len(todo), world):
        mine = todo[round_start + rank] if round_start + rank < len(todo) else None
        result = None
        if mine is not None:
            need = [k for k, d in enumerate(done) if mine not in d]
            inner = (lambda n, base=finished: progress(base + n)) if progress and world == 1 else None
            result = (mine, score_chunk(job, [targets[k] for k in need], need, mine, progress=inner))
        for res in gather(result, rank, world):
            if res is None:
                continue
            c, scored = res
            chunk_pairs = chunk(job.pairs, c, job.chunk_size)
            for k, sc in scored.items():
                t = targets[k]
                entropy = job.settings.token_level and t.numerics == "exact" and t.policy is not None
                t.store.write_chunk(c, *chunk_frames(chunk_pairs, sc, job.pieces, entropy))
            computed += 1
            finished += len(chunk_pairs)
            if os.environ.get("DID_TEST_CHUNK_DELAY"):  # lets fault tests kill -9 between chunks
                time.sleep(float(os.environ["DID_TEST_CHUNK_DELAY"]))
        if progress:
            progress(finished)
    return computed


# -- torch.distributed ---------------------------------------------------------------------------------
def dist_rank_world(init: bool = True) -> tuple[int, int]:
    """(rank, world size): from torch.distributed when launched by torchrun (initialized here when
    `init` and not yet), else (0, 1)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if not init:
                return 0, 1
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(result, rank: int, world: int) -> list:
    """Every rank's `result`, on rank 0 (other ranks get [])."""
    if world == 1:
        return [result]
    import torch.distributed as dist

    out = [None] * world if rank == 0 else None
    dist.gather_object(result, out, dst=0)
    return out or []


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# -- run.json ------------------------------------------------------------------------------------------
def run_manifest(name: str, data, source: str, pairs: Sequence[TokenizedPair], resolved: ResolvedSettings,
                 fields: dict[str, dict], wanted: Sequence[str], notes: Sequence[str], exact_dtype: str,
                 device_type: str, reference: dict, checkpoints: list[dict], log_history: list,
                 extra: dict) -> dict:
    """runs/<name>/run.json (docs/REFERENCE.md §8): `reference` and `checkpoints` entries carry `score`
    (the primary numerics' fingerprint) and `scores` (per numerics). `data` is the PreferenceData."""
    rs = resolved.settings
    return {
        "name": name, "created": now_iso(),
        "dataset": {"fingerprint": data.fingerprint, "source": str(source), "n_pairs": len(pairs),
                    "conversational": data.conversational},
        "beta": rs.beta, "settings": fields["exact"], "run_settings": resolved.to_manifest(),
        "settings_origin": resolved.origin, "overrides": resolved.notes(), "notes": list(notes),
        "numerics": list(wanted),
        "numerics_detail": {"exact": {"dtype": exact_dtype, "sums": "float64"},
                            "trainer": {"precision": rs.precision, "device": device_type,
                                        "eval_batch_size": rs.eval_batch_size, "sums": "float32"}},
        "reference": reference, "checkpoints": checkpoints, "trainer_log_history": log_history,
        "extra": {"truncation": truncation_report(pairs)} | extra,
    }


def model_entry(name: str, path: str, step: int | None, fps: dict[str, str], wanted: Sequence[str]) -> dict:
    """A reference or checkpoint entry of run.json."""
    return {"name": name, "path": path, "step": step, "score": fps[wanted[0]], "scores": {nm: fps[nm] for nm in wanted}}
