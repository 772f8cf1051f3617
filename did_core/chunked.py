"""What every scoring job shares: fingerprints, store metadata, the chunk loop and run.json.

Two jobs fill the store: the `score` command (`score.py`: models loaded from folders) and the live
callback (`callback.py`: the trainer's own models, at every evaluation). Both cut the tokenized
pairs into fixed chunks (in dataset order), score a chunk under every target that lacks it, and
write it atomically (`store.ScoreStore.write_chunk`); under torch.distributed the ranks take chunks
round-robin and rank 0 gathers and writes them, so no two processes ever write the same file.
Keeping one definition here is what makes a live step and `score --run` on the same weights
produce the same files.

Why one module of ~360 lines: the fingerprints, the store metadata, the chunk loop and run.json are
the contract both jobs share; split apart, the two jobs could drift in one of them.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from did_core.config import ScoreSettings
from did_core.distributed import gather
from did_core.engine import FeatureCache, PairScores, empty_pair, score_batch_models
from did_core.errors import InputError
from did_core.fingerprints import fingerprint
from did_core.manifest import DatasetInfo, ModelEntry, RunManifest
from did_core.run_settings import ResolvedSettings, RunSettings
from did_core.tokenization import TokenizedPair, truncation_report
from did_core.trainer_numerics import score_trainer_batches

CHUNK_SIZE = 128  # pairs per stored chunk: the unit of resume
EXACT_STORED = "ches+squeezing+token-squeezing"
"""The per-example columns an exact store holds (`chunk_frames`); keyed into its fingerprint. It grew
with each addition ("ches+squeezing": the pairs rows' CHES and squeezing means; "+token-squeezing":
the tokens rows' top1_prob and token_entropy), so a store from before is rescored, never mixed."""


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
    # What an exact store holds beyond log-probs and DID entropy: a store from before (no key) lacks
    # CHES and the squeezing columns, so it is not resumed into (no chunk mix) but rescored; the
    # trainer numerics compute neither, so their fingerprints stay.
    fields["stored"] = EXACT_STORED
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
    """What the chunk loop needs, fixed for one job: the models, the pairs and how to score them.

    Policies are given as loaders and held one at a time (`run_chunks`): a job's memory is the
    reference, one policy and the reference's cached head inputs (`cache_bytes`), whatever the number
    of checkpoints.
    """

    reference: Any
    policies: Sequence[Callable[[], Any]]
    """Policy i's loader: called when its turn comes, its model dropped after (the live callback's
    returns the trainer's model)."""
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
    cache_bytes: int = 0
    """Bytes for the reference's head inputs kept between policies (token-level only; 0: recomputed)."""
    owns_policies: bool = True
    """False when the loaders return models kept elsewhere (the live callback's trainer model): their
    turn frees nothing, so no garbage collection is run after it."""
    row_bytes: int = 0
    """Bytes of one cached row (hidden size × dtype), to cut the chunks into blocks whose cache fits;
    0 when unknown (one block, cached as far as the budget goes)."""
def token_strings(tokenizer, pairs: Sequence[TokenizedPair]) -> dict[int, str]:
    """Decoded text of every token id that occurs in a response (decoded one id at a time)."""
    ids = {t for p in pairs for t in (*p.chosen_ids, *p.rejected_ids)}
    return {i: tokenizer.decode([i]) for i in ids}


def _mean(values: np.ndarray | None) -> float:
    """Mean over a response's positions in float64 (NaN when not computed or empty)."""
    return float(np.mean(values, dtype=np.float64)) if values is not None and len(values) else np.nan


def _value(x: float | None) -> float:
    return np.nan if x is None else float(x)


def chunk_frames(pairs: Sequence[TokenizedPair], scores: Sequence[PairScores], pieces: dict[int, str],
                 with_entropy: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One model's scores for one chunk as the store's pairs and tokens tables (ARCHITECTURE.md)."""
    rows, tok_cols = [], {k: [] for k in ("pair_id", "side", "position", "token_id", "token", "logp",
                                          "did_entropy", "top1_prob", "token_entropy")}
    for p, s in zip(pairs, scores, strict=True):
        row = {"pair_id": p.pair_id, "ches": _value(s.ches), "ches_norm": _value(s.ches_norm)}
        for side, ids, r, dropped in (("chosen", p.chosen_ids, s.chosen, p.chosen_dropped),
                                      ("rejected", p.rejected_ids, s.rejected, p.rejected_dropped)):
            ent = r.did_entropy if (with_entropy and r.did_entropy is not None) else None
            row |= {f"logp_{side}": float(r.logp_sum), f"n_tokens_{side}": len(ids), f"dropped_{side}": dropped,
                    f"did_entropy_{side}": float(np.mean(ent)) if ent is not None and len(ent) else np.nan,
                    f"did_entropy_max_{side}": float(np.max(ent)) if ent is not None and len(ent) else np.nan,
                    f"top1_prob_{side}": _mean(r.top1_prob), f"token_entropy_{side}": _mean(r.token_entropy)}
            n = len(ids)
            tok_cols["pair_id"] += [p.pair_id] * n
            tok_cols["side"] += [side] * n
            tok_cols["position"] += list(range(n))
            tok_cols["token_id"] += list(ids)
            tok_cols["token"] += [pieces[i] for i in ids]
            tok_cols["logp"] += list(np.asarray(r.token_logps, dtype=np.float32))
            tok_cols["did_entropy"] += list(ent) if ent is not None else [np.nan] * n
            for k in ("top1_prob", "token_entropy"):  # None from the trainer numerics: NaN, said by the readers
                v = getattr(r, k)
                tok_cols[k] += list(np.asarray(v, dtype=np.float32)) if v is not None else [np.nan] * n
        rows.append(row)
    pairs_df = pd.DataFrame(rows)
    tokens_df = pd.DataFrame(tok_cols).astype({"position": "int32", "token_id": "int32", "logp": "float32",
                                               "did_entropy": "float32", "top1_prob": "float32",
                                               "token_entropy": "float32"})
    return pairs_df, tokens_df


def score_chunk(job: ChunkJob, policy: Any, targets: Sequence[Target], keys: Sequence[int], c: int,
                cache: FeatureCache | None = None, progress: Callable[[int], None] | None = None,
                ) -> dict[int, list[PairScores]]:
    """Scores of chunk `c` for `targets` (the reference's and/or those of the one loaded `policy`):
    {target key: one PairScores per chunk pair}."""
    chunk_pairs = chunk(job.pairs, c, job.chunk_size)
    out: dict[int, list[PairScores]] = {}
    exact = [(k, t) for k, t in zip(keys, targets, strict=True) if t.numerics == "exact"]
    if exact:
        with_policy = any(t.policy is not None for _, t in exact)
        ref_scores, pol_scores = score_batch_models(
            job.reference, [policy] if with_policy else [], chunk_pairs, token_level=job.settings.token_level,
            score_reference=any(t.policy is None for _, t in exact),
            token_budget=job.settings.budget_for(job.device.type), device=job.device, dtype=job.dtype,
            progress=progress, ref_cache=cache)
        for k, t in exact:
            out[k] = ref_scores if t.policy is None else pol_scores[0]  # type: ignore[assignment]
    trainer = [(k, t) for k, t in zip(keys, targets, strict=True) if t.numerics == "trainer"]
    if trainer:
        lo, hi = c * job.chunk_size, c * job.chunk_size + len(chunk_pairs)
        mine = [b for b in job.batches if any(lo <= i < hi for i in b)]  # a batch across two chunks runs in both
        rs = job.rs
        scored = score_trainer_batches(
            [job.reference if t.policy is None else policy for _, t in trainer], job.pairs, mine,
            precision=rs.precision, max_length=rs.max_length, truncation_mode=rs.truncation_mode,
            pad_to_multiple_of=rs.pad_to_multiple_of, pad_token_id=job.pad_id, device=job.device)
        for (k, _), per_pair in zip(trainer, scored, strict=True):
            out[k] = [per_pair.get(i) or empty_pair(False) for i in range(lo, hi)]
    return out


def blocks(job: ChunkJob, todo: Sequence[int]) -> list[list[int]]:
    """`todo` cut into runs of chunks whose reference head inputs fit `job.cache_bytes` together
    (each policy is loaded once per block; one block when the sizes are unknown or all fit)."""
    if not job.row_bytes or not job.settings.token_level:
        return [list(todo)] if todo else []
    out: list[list[int]] = []
    used = job.cache_bytes + 1
    for c in todo:
        need = job.row_bytes * sum(len(p.chosen_ids) + len(p.rejected_ids) for p in chunk(job.pairs, c, job.chunk_size))
        if used + need > job.cache_bytes and (not out or out[-1]):
            out.append([])
            used = 0
        out[-1].append(c)
        used += need
    return out


def _free(device: Any, dropped: weakref.ref | None) -> None:
    """Give a dropped model's memory back before the next one loads. Reference counting frees a plain
    model at its `del`; a full collection (~0.3 s with torch and transformers imported, more in a
    bigger process) runs only when something cyclic still keeps it alive."""
    if dropped is not None and dropped() is not None:
        gc.collect()
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()


class _Counter:
    """Pair passes (one pair under one model) finished, for `progress`; distinct chunks computed."""

    def __init__(self, job: ChunkJob, targets: Sequence[Target], done: Sequence[set[int]],
                 progress: Callable[[int, int], None] | None) -> None:
        self.job, self.progress = job, progress
        self.models = sorted({t.policy for t in targets}, key=lambda p: -1 if p is None else p)
        n = n_chunks(len(job.pairs), job.chunk_size)
        self.total = len(job.pairs) * len(self.models)
        self.finished = self.total - sum(len(chunk(job.pairs, c, job.chunk_size)) for c in range(n)
                                         for m in self.models
                                         if any(c not in d for d, t in zip(done, targets, strict=True) if t.policy == m))
        self.chunks: set[int] = set()

    def tell(self, extra: int = 0) -> None:
        if self.progress:
            self.progress(self.finished + extra, self.total)


def run_chunks(job: ChunkJob, targets: Sequence[Target], done: Sequence[set[int]], rank: int, world: int,
               progress: Callable[[int, int], None] | None = None,
               on_chunk: Callable[[int], None] | None = None) -> int:
    """Score and store every chunk some target lacks (`done[k]`: chunks target k has); return how many
    distinct chunks were computed.

    Checkpoint-major: per block of chunks (`blocks`), the first policy is scored together with the
    reference (whose stores are filled on the way), then each further policy, one loaded at a time.
    Each round every rank scores one chunk; rank 0 gathers and writes them. `progress(done, total)`
    counts pair passes (one pair under one model), within a chunk too on one process; `on_chunk(c)`
    runs after each stored chunk (fault tests slow a job down with it).
    """
    count = _Counter(job, targets, done, progress)
    missing = {m: [c for c in range(n_chunks(len(job.pairs), job.chunk_size))
                   if any(c not in d for d, t in zip(done, targets, strict=True) if t.policy == m)]
               for m in count.models}
    todo = sorted({c for cs in missing.values() for c in cs})
    count.tell()
    for block in blocks(job, todo):
        cache = FeatureCache(job.cache_bytes) if job.settings.token_level and job.cache_bytes else None
        here = [m for m in count.models if m is not None and set(missing[m]) & set(block)]
        turns: list[list[int | None]] = [[None] + here[:1]] + [[m] for m in here[1:]]
        for turn in turns:
            model = job.policies[turn[-1]]() if turn[-1] is not None else None
            dropped = weakref.ref(model) if model is not None and job.owns_policies else None
            keys = [k for k, t in enumerate(targets) if t.policy in turn]
            chunks = [c for c in block if any(c not in done[k] for k in keys)]
            _turn(job, targets, done, keys, chunks, model, cache, count, rank, world, on_chunk)
            del model
            _free(job.device, dropped)
    return len(count.chunks)


def _turn(job: ChunkJob, targets: Sequence[Target], done: Sequence[set[int]], keys: Sequence[int],
          chunks: Sequence[int], model: Any, cache: FeatureCache | None, count: _Counter, rank: int, world: int,
          on_chunk: Callable[[int], None] | None) -> None:
    """Score `chunks` for the targets `keys` (the reference's and/or those of the loaded policy `model`)."""
    for round_start in range(0, len(chunks), world):
        mine = chunks[round_start + rank] if round_start + rank < len(chunks) else None
        result = None
        if mine is not None:
            need = [k for k in keys if mine not in done[k]]
            width = len({targets[k].policy for k in need})
            inner = (lambda n, w=width: count.tell(n * w)) if world == 1 else None
            result = (mine, score_chunk(job, model, [targets[k] for k in need], need, mine, cache, progress=inner))
        for res in gather(result, rank, world):
            if res is None:
                continue
            c, scored = res
            chunk_pairs = chunk(job.pairs, c, job.chunk_size)
            for k, sc in scored.items():
                t = targets[k]
                entropy = job.settings.token_level and t.numerics == "exact" and t.policy is not None
                t.store.write_chunk(c, *chunk_frames(chunk_pairs, sc, job.pieces, entropy))
            count.chunks.add(c)
            count.finished += len(chunk_pairs) * len({targets[k].policy for k in scored})
            if on_chunk:
                on_chunk(c)
        count.tell()


# -- run.json ------------------------------------------------------------------------------------------
def run_manifest(name: str, data, source: str, pairs: Sequence[TokenizedPair], resolved: ResolvedSettings,
                 fields: dict[str, dict], wanted: Sequence[str], notes: Sequence[str], exact_dtype: str,
                 device_type: str, reference: ModelEntry, checkpoints: Sequence[ModelEntry], log_history: list,
                 extra: dict) -> RunManifest:
    """runs/<name>/run.json (docs/REFERENCE.md §8): `reference` and `checkpoints` entries carry `score`
    (the primary numerics' fingerprint) and `scores` (per numerics). `data` is the PreferenceData."""
    rs = resolved.settings
    return RunManifest(
        name=name, created=now_iso(),
        dataset=DatasetInfo(fingerprint=data.fingerprint, source=str(source), n_pairs=len(pairs),
                            conversational=data.conversational),
        beta=rs.beta, settings=fields["exact"], run_settings=resolved.to_manifest(),
        settings_origin=resolved.origin, overrides=tuple(resolved.notes()), notes=tuple(notes),
        numerics=tuple(wanted),
        numerics_detail={"exact": {"dtype": exact_dtype, "sums": "float64"},
                         "trainer": {"precision": rs.precision, "device": device_type,
                                     "eval_batch_size": rs.eval_batch_size, "sums": "float32"}},
        reference=reference, checkpoints=tuple(checkpoints), trainer_log_history=tuple(log_history),
        extra={"truncation": truncation_report(pairs)} | extra,
    )


def model_entry(name: str, path: str, step: int | None, fps: dict[str, str], wanted: Sequence[str]) -> ModelEntry:
    """A reference or checkpoint entry of run.json."""
    return ModelEntry(name=name, path=path, step=step, score=fps[wanted[0]], scores={nm: fps[nm] for nm in wanted})
