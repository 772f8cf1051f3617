"""`DIDCallback`: score a fixed probe set with the live policy while TRL's DPOTrainer trains.

    from did_core.callback import DIDCallback
    trainer = DPOTrainer(model=..., args=DPOConfig(eval_strategy="steps", ...), ...)
    trainer.add_callback(DIDCallback("probe.jsonl", workspace="workspace"))

At train start the callback reads the run's settings from the trainer's own arguments
(`run_settings.from_training_args`: β, max length, loss, precision), tokenizes the probe as the
trainer does (`tokenization.tokenize_pairs`) and scores the reference once — the trainer's
`ref_model`, or for a PEFT policy without one the base model with its adapters off (TRL's
convention, `trl.trainer.utils.use_adapter`) — reusing a stored reference score whose fingerprint
matches (a `score` job's too). At every evaluation (or every N steps) it scores the probe with the
policy as it is and writes one more checkpoint `step-N` of a live run (`live_run.py`), through the
same chunk loop, store and fingerprints as the `score` command (`chunked.py`): a step's numbers are
those `score --run` gives for a checkpoint saved at that step.

The training must not notice: scoring runs under `torch.inference_mode` on the models as they are
(no copy, no cast, no move: a model in another dtype is scored in it, and said so), and every
module's train/eval flag and the torch, CUDA, NumPy and Python RNG states are put back afterwards.
Under DDP every rank scores a share of the probe's chunks and rank 0 writes; under FSDP or
DeepSpeed ZeRO-3 no rank holds the whole model, so the callback refuses at train start.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from did_core import chunked, distributed, live_run
from did_core.config import ScoreSettings
from did_core.data import load_preference_data
from did_core.fingerprints import tokenizer_fingerprint
from did_core.live_models import WEIGHTS_PREFIX, AdaptersOff, is_peft, plain_forward, resolve_reference, untouched
from did_core.manifest import RunManifest, live_writer
from did_core.plan import approximation_notes, resolve_numerics, resolve_settings
from did_core.token_audit import audit_record
from did_core.tokenization import tokenize_pairs
from did_core.trainer_numerics import adopt_fused_head, precision_supported, trainer_batches
from did_core.trl_run import RunInfo
from did_core.workspace import Workspace, validate_name

DEFAULT_LIMIT = 24
"""Probe pairs scored by default. Scoring a pair (policy and reference forwards, token-level DID entropy)
costs a fifth to a third of training on one (forward and backward, reference), so at TRL's default eval
cadence (every 10 steps of 8 pairs) 24 pairs took 8 % of training time and 32 pairs 12 %
(bench/callback_overhead.py; README, "Live during training"); `limit=None` scores the whole probe."""

SHARDED = ("DIDCallback cannot score under FSDP or DeepSpeed ZeRO-3: no rank holds the whole model; train with "
           "DDP or ZeRO-1/2, or score the saved checkpoints afterwards with `python -m did_core score --run`")


class DIDCallback(TrainerCallback):
    """Scores `probe` with the live policy at every evaluation (`every="eval"`) or every N steps and
    writes each as checkpoint `step-N` of the live run `name` in `workspace`.

    `probe`: what `score --data` accepts (a path) or a `datasets.Dataset`. `numerics`: "exact"
    (float32 forward, float64 sums; the default), "trainer" (the forward as the trainer's eval ran
    it), "both" or "auto". `name`: the live run's name (default `<output_dir name>__live`).
    `limit`: score only the first N pairs (default `DEFAULT_LIMIT`, None: all). `token_level`: token-level
    DID entropy. `on_chunk(c)`: called after each stored chunk of a step (a progress hook).
    """

    def __init__(self, probe: Any, workspace: str | Path = "workspace", every: str | int = "eval",
                 numerics: str = "exact", name: str | None = None, *, limit: int | None = DEFAULT_LIMIT,
                 token_level: bool = True, token_budget: int | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> None:
        if every != "eval" and not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise ValueError(f"every must be 'eval' or a whole number of steps >= 1, got {every!r}")
        if numerics not in ("exact", "trainer", "both", "auto"):
            raise ValueError(f"numerics must be exact, trainer, both or auto, got {numerics!r}")
        if name is not None:
            validate_name(name)
        self.probe, self.workspace, self.every, self.numerics, self.name = probe, workspace, every, numerics, name
        self.settings = ScoreSettings(token_level=token_level, token_budget=token_budget, limit=limit)
        self.on_chunk = on_chunk
        self.session: _Session | None = None

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):  # noqa: ANN001
        trainer = find_trainer()
        check_unsharded(trainer)
        if self.every == "eval" and str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
            raise ValueError("DIDCallback(every='eval') scores at each evaluation, and this trainer never evaluates "
                             "(eval_strategy='no'): set eval_strategy='steps' and an eval_dataset, or give every=N")
        self.session = _Session(self, trainer, args, state, model or trainer.model,
                                processing_class or trainer.processing_class)

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.session and self.every != "eval" and state.global_step % self.every == 0:
            self.session.score_step(state)

    def on_evaluate(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        if self.session and self.every == "eval":
            self.session.score_step(state)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.session:
            self.session.finish(state)


def find_trainer():
    """The `transformers.Trainer` whose `train()` is calling us: callbacks are not handed it, and the
    reference model and accelerator live on it (TRL's own callbacks take it as an argument)."""
    from transformers import Trainer

    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer):
            return owner
        frame = frame.f_back
    raise ValueError("DIDCallback must be added to a transformers Trainer (TRL's DPOTrainer) and run by its train()")


def check_unsharded(trainer) -> None:
    """ValueError (one sentence) under FSDP or DeepSpeed ZeRO-3, where the parameters are sharded."""
    if getattr(trainer, "is_fsdp_enabled", False):
        raise ValueError(SHARDED)
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
        if plugin is None or getattr(plugin, "zero_stage", 3) == 3:
            raise ValueError(SHARDED)


class _Session:
    """One `train()` call: the probe's tokens, the reference's score, and the live run being written."""

    def __init__(self, cb: DIDCallback, trainer, args, state, model: nn.Module, processing_class) -> None:
        self.ws, self.state_model, self.on_chunk = Workspace(cb.workspace), model, cb.on_chunk
        self.rank, self.world = distributed.dist_rank_world(init=False)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        info = RunInfo(run_dir=str(args.output_dir), checkpoints=[], training_args=args.to_dict(),
                       args_source="the trainer's arguments")
        self.resolved = resolve_settings(info, None, chunked.template_hash(tokenizer))
        rs = self.resolved.settings
        self.wanted = resolve_numerics(cb.numerics, rs)
        self.policy = model.get_base_model() if is_peft(model) else model
        self.notes = approximation_notes(rs)
        self.device = next(self.policy.parameters()).device
        self._check_numerics(rs)
        self.reference, ref_model_fp, ref_name, ref_path = resolve_reference(trainer, model, state.global_step)
        settings = cb.settings
        if settings.token_level and (self.reference is None or self.reference is model):
            settings = replace(settings, token_level=False)
            self.notes.append("no token-level DID entropy: the trainer keeps no reference model "
                              "(precompute_ref_log_probs without ref_model)")
        self._check_reference()
        if "trainer" in self.wanted:
            for m in (self.policy, self.reference):
                if m is not None and not isinstance(m, AdaptersOff):
                    adopt_fused_head(m)
        self.data = load_preference_data(cb.probe, limit=settings.limit)
        if settings.limit is not None and len(self.data.pairs) == settings.limit:
            self.notes.append(f"the probe's first {settings.limit} pairs are scored (DIDCallback limit={settings.limit}; "
                              "limit=None scores them all)")
        pairs = tokenize_pairs(self.data, tokenizer, rs.max_length)
        chunked.check_truncation_mode(pairs, rs)
        dtype = next(self.policy.parameters()).dtype
        self.name = cb.name or validate_name(f"{Path(str(args.output_dir)).name}__live")
        self.output_dir, self.every = str(args.output_dir), cb.every
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.job = chunked.ChunkJob(
            reference=self.reference, policies=[lambda: self.policy], pairs=pairs, chunk_size=chunked.chunk_size(),
            batches=trainer_batches(pairs, rs.eval_batch_size, rs.max_length, rs.truncation_mode), settings=settings,
            rs=rs, device=self.device, dtype=dtype, pad_id=pad_id, pieces=chunked.token_strings(tokenizer, pairs),
            owns_policies=False)
        self.fields = chunked.score_fields(settings, rs, self.job.chunk_size, self.device.type,
                                           dtype=str(dtype).removeprefix("torch."))
        self.tok_fp = tokenizer_fingerprint(tokenizer)
        self.audit = audit_record(pairs, tokenizer, self.data.conversational)  # the Runs page's audit, as score's
        self.common = {"dataset": self.data.fingerprint, "n_pairs": len(pairs), "chunk_size": self.job.chunk_size,
                       "n_chunks": chunked.n_chunks(len(pairs), self.job.chunk_size), "tokenizer": self.tok_fp}
        self.manifest = self._start(state, ref_model_fp, ref_name, ref_path)

    def _check_numerics(self, rs) -> None:
        if "trainer" in self.wanted:
            ok, why = precision_supported(self.device, rs.precision)
            if not ok:
                raise ValueError(f"numerics trainer needs {rs.precision} autocast, but {why}")
        dtype = next(self.policy.parameters()).dtype
        if dtype != torch.float32 and "exact" in self.wanted:
            self.notes.append(f"exact numerics in {str(dtype).removeprefix('torch.')}: the policy's weights are "
                              "not float32, and the callback never casts the model it trains")

    @contextlib.contextmanager
    def _scoring(self) -> Iterator[None]:
        """Around every scoring: no trace left on training, and the models' own forwards."""
        models = [m for m in (self.state_model, self.policy, self.reference) if m is not None]
        with untouched(*models), plain_forward(*models):
            yield

    def _check_reference(self) -> None:
        """The engine casts and moves a model that is not in its dtype and device: never the trainer's."""
        if self.reference is None:
            return
        ref, pol = next(self.reference.parameters()), next(self.policy.parameters())
        if (ref.device, ref.dtype) != (pol.device, pol.dtype):
            raise ValueError(f"DIDCallback needs the reference on the policy's device and dtype ({pol.device}, "
                             f"{pol.dtype}); it is on {ref.device} in {ref.dtype}")

    def _start(self, state, ref_model_fp: str | None, ref_name: str, ref_path: str) -> RunManifest:
        """Score (or find) the reference, write the live run's first run.json; every rank returns it."""
        if self.rank == 0:
            self.ws.remove_orphaned_temps()
            self.ws.write_dataset(self.data)
        stored = live_run.stored_live_run(self.ws, self.name)
        if ref_model_fp is None:  # the reference is gone (see resolve_reference): the stored run's
            if not stored:
                raise ValueError("DIDCallback: the trainer keeps no reference model (precompute_ref_log_probs, no "
                                 "ref_model) and the policy has moved; start the callback with the training")
            self.ref_fps = dict(stored.reference.scores)
        else:
            self.ref_fps = chunked.reference_fingerprints(self.data.fingerprint, ref_model_fp, self.tok_fp, self.fields)
        meta = {"name": ref_name, "path": ref_path, "role": "reference", "step": None}
        files_fp = ref_model_fp if ref_model_fp and not ref_model_fp.startswith(WEIGHTS_PREFIX) else None
        targets = [chunked.Target(nm, None, self.ws.score_store(self.ref_fps[nm], chunked.store_meta(
            self.common, self.fields, nm, meta, None, files_fp))) for nm in self.wanted]
        done = [t.store.done_chunks() for t in targets]
        if self.reference is None and any(d != set(range(self.common["n_chunks"])) for d in done):
            raise ValueError(f"DIDCallback: the stored reference score of run {self.name!r} is incomplete and the "
                             "trainer keeps no reference model to finish it")
        t0 = time.perf_counter()
        with self._scoring():
            computed = chunked.run_chunks(self.job, targets, done, self.rank, self.world)
        ref_seconds = round(time.perf_counter() - t0, 4)
        manifest = chunked.run_manifest(
            self.name, self.data, self.data.source, self.job.pairs, self.resolved, self.fields, self.wanted,
            self.notes, self.fields["exact"]["dtype"], self.device.type,
            reference=chunked.model_entry(ref_name, ref_path, None, self.ref_fps, self.wanted), checkpoints=[],
            log_history=list(state.log_history), extra={"live_run": True, "audit": self.audit})
        manifest = manifest.replace(live_info={"output_dir": self.output_dir, "every": self.every,
                                               "reference_seconds": ref_seconds, "score_seconds": {},
                                               **live_writer()})  # rank 0's: the process that writes run.json
        if self.rank == 0:
            for t in targets:
                if computed or not t.store.meta().get("complete"):
                    t.store.mark_complete()
        manifest = live_run.continue_from(self.ws, manifest, state.global_step)  # every rank: the same steps
        distributed.barrier(self.world)
        if self.rank == 0:
            manifest = live_run.write(self.ws, manifest, live=True)
        distributed.barrier(self.world)
        return manifest

    def score_step(self, state) -> None:
        """Score the probe with the policy at `state.global_step` and add it to the live run (once a step)."""
        step = state.global_step
        if any(e.step == step for e in self.manifest.checkpoints):
            return
        t0 = time.perf_counter()
        fps = chunked.policy_fingerprints(self.data.fingerprint, live_run.step_model_fingerprint(self.name, step),
                                          self.tok_fp, self.fields, self.ref_fps)
        path = str(Path(self.output_dir) / f"checkpoint-{step}")
        meta = {"name": live_run.step_name(step), "path": path, "role": "policy", "step": step}
        targets = []
        for nm in self.wanted:
            store = None
            if self.rank == 0:
                live_run.reset_score(self.ws, fps[nm])
                store = self.ws.score_store(fps[nm], chunked.store_meta(
                    self.common, self.fields, nm, meta, self.ref_fps[nm], None, live={"run": self.name, "step": step}))
            targets.append(chunked.Target(nm, 0, store))
        with self._scoring():
            chunked.run_chunks(self.job, targets, [set() for _ in targets], self.rank, self.world,
                               on_chunk=self.on_chunk)
        entry = chunked.model_entry(meta["name"], path, step, fps, self.wanted)
        self.manifest = live_run.with_step(self.manifest, entry, time.perf_counter() - t0)
        if self.rank == 0:
            for t in targets:
                t.store.mark_complete()
            self.manifest = live_run.write(self.ws, self.manifest, live=True, log_history=state.log_history)
        distributed.barrier(self.world)

    def finish(self, state) -> None:
        """Training is over: run.json says so, with the trainer's whole log."""
        if self.rank == 0:
            self.manifest = live_run.write(self.ws, self.manifest, live=False, log_history=state.log_history)
        distributed.barrier(self.world)
