"""A *live run*: the workspace record of a training run that `callback.DIDCallback` scores as it trains.

Its run.json is any run's (docs/REFERENCE.md §8) plus three fields:

- `live`: true from train start until `train()` returns (a killed job leaves it true);
- `last_write`: ISO time of the last write (a new step, the trainer's log, the end);
- `live_info`: `{"output_dir", "every", "score_seconds": {step: seconds}, "pid", "host"}`: where the
  trainer saves, how long each step's scoring took (the callback's cost) and the process writing it
  (`RunManifest.writer_gone`: the dashboard tells a killed job's run from a training one).

Each scored step is one checkpoint entry named `step-N` (N = the trainer's global step), with the path
where the trainer saves that step (`<output_dir>/checkpoint-N`, whether or not it does), ordered by
step, each step at most once. A step's score is written (atomically, chunk by chunk) before run.json
lists it, so a reader never sees a half-written step; a killed job's half-written step is never
listed and is rewritten from scratch when training reaches that step again.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from did_core import chunked
from did_core.errors import InputError
from did_core.fingerprints import fingerprint
from did_core.manifest import ModelEntry, RunManifest
from did_core.workspace import Workspace

STEP_PREFIX = "step-"
_SAME_RUN_KEYS = ("settings", "numerics")


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{step}"


def step_model_fingerprint(run: str, step: int) -> str:
    """What stands for a live step's model files in its score fingerprint: the run and the step."""
    return fingerprint("live-step", run, step)


def _same_run(old: RunManifest, new: RunManifest) -> bool:
    """Whether `old` (a stored manifest) scored the same probe, reference and settings as `new`."""
    return (old.dataset.fingerprint == new.dataset.fingerprint and old.reference.scores == new.reference.scores
            and all(getattr(old, k) == getattr(new, k) for k in _SAME_RUN_KEYS))


def stored_live_run(ws: Workspace, name: str) -> RunManifest | None:
    """The stored manifest of live run `name` (None when there is none); InputError when the name
    belongs to a run that is not live (a `score` run is never overwritten)."""
    if name not in ws.run_names():
        return None
    old = ws.run(name)
    if not old.is_live:
        raise InputError(f"run {name!r} in workspace {ws.root} was not written by DIDCallback; "
                         "give the callback another name=")
    return old


def continue_from(ws: Workspace, manifest: RunManifest, global_step: int) -> RunManifest:
    """`manifest` (the new run.json) carrying on the stored live run of the same name.

    Training that resumes at `global_step` keeps the stored steps up to it (a resume from the last
    checkpoint keeps them all) and drops later ones: training redoes those steps, and they belong to
    the abandoned trajectory. A stored run with another probe, reference or settings is started over.
    """
    old = stored_live_run(ws, manifest.name)
    if old is None or not _same_run(old, manifest):
        return manifest
    kept = tuple(e for e in old.checkpoints if e.step is not None and e.step <= global_step)
    seconds = {k: v for k, v in (old.live_info or {}).get("score_seconds", {}).items() if int(k) <= global_step}
    info = dict(manifest.live_info or {}) | {"score_seconds": seconds}
    return manifest.replace(created=old.created or manifest.created, checkpoints=kept, live_info=info)


def with_step(manifest: RunManifest, entry: ModelEntry, seconds: float) -> RunManifest:
    """`manifest` with checkpoint `entry` added (replacing one of the same step), steps in order."""
    others = [e for e in manifest.checkpoints if e.step != entry.step]
    info = dict(manifest.live_info or {})
    info["score_seconds"] = dict(info.get("score_seconds") or {}) | {str(entry.step): round(seconds, 4)}
    return manifest.replace(checkpoints=tuple(sorted([*others, entry], key=lambda e: e.step)), live_info=info)


def write(ws: Workspace, manifest: RunManifest, *, live: bool,
          log_history: Sequence[dict] | None = None) -> RunManifest:
    """Write run.json with `live`, a fresh `last_write` and the trainer's log so far; return it."""
    out = manifest.replace(live=live, last_write=chunked.now_iso())
    if log_history is not None:
        out = out.replace(trainer_log_history=tuple(log_history))
    ws.write_run(out)
    return out


def reset_score(ws: Workspace, score_fp: str) -> None:
    """Remove what an earlier (killed, or abandoned) attempt at this step wrote: the step starts clean.

    Only for a step run.json does not list, so no reader is looking at it."""
    shutil.rmtree(ws.score_dir(score_fp), ignore_errors=True)
