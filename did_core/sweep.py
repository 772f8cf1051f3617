"""Runs side by side: which runs can be compared pair by pair, and each run's settings in one row.

Pure functions over run manifests (`manifest.RunManifest`); no I/O. Two runs are comparable pair by pair
(cross-run Compare, docs/REFERENCE.md §5) when they were scored on the same dataset (the same
`dataset.fingerprint`: the same normalized pairs) against the same reference score (the same
reference `scores[numerics]` fingerprint, which keys the dataset, the reference model's files, its
tokenizer and the scoring settings that change its numbers). Then both runs' `ref_*` columns are the
same numbers, every pair id means the same pair, and A's and B's log-probs differ only by the models.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from did_core.manifest import RunManifest

TRAINER_ARGS = ("learning_rate", "lr_scheduler_type", "per_device_train_batch_size", "num_train_epochs",
                "max_steps", "seed")
"""Training arguments the score job records in run.json (`extra.trainer_args`) besides the run
settings: what a sweep varies that does not change a scored number (the learning rate first)."""


def trainer_args(training_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The TRAINER_ARGS a run folder's saved training arguments record (plain values only)."""
    args = training_args or {}
    return {k: args[k] for k in TRAINER_ARGS if isinstance(args.get(k), int | float | str) and not isinstance(args[k], bool)}


def learning_rate(manifest: RunManifest) -> tuple[float | None, str]:
    """(learning rate, where it came from): the trainer's saved arguments ("trainer"); else the first
    learning rate the trainer logged ("trainer log": the scheduled rate at that step, which is the
    configured one only for a constant schedule without warm-up); else (None, "not recorded")."""
    lr = (manifest.extra.get("trainer_args") or {}).get("learning_rate")
    if isinstance(lr, int | float) and not isinstance(lr, bool):
        return float(lr), "trainer"
    for entry in manifest.trainer_log_history:
        lr = entry.get("learning_rate")
        if isinstance(lr, int | float) and not isinstance(lr, bool):
            return float(lr), "trainer log"
    return None, "not recorded"


def settings_row(manifest: RunManifest) -> dict[str, Any]:
    """One run's resolved settings for a sweep table: β, loss type, learning rate and max length, each
    with its source (trainer, default or override, as `run_settings.from_manifest` resolves them), and
    the numerics it was scored in."""
    resolved = manifest.resolved_settings()
    rs, src = resolved.settings, resolved.sources
    lr, lr_source = learning_rate(manifest)
    return {"β": rs.beta, "β source": src["beta"], "loss type": rs.loss_label(), "loss source": src["loss_type"],
            "learning rate": lr, "lr source": lr_source,
            "max length": "none" if rs.max_length is None else str(rs.max_length), "max length source": src["max_length"],
            "numerics": " + ".join(manifest.numerics)}


def _reference_score(manifest: RunManifest, numerics: str) -> str | None:
    ref, have = manifest.reference, manifest.numerics
    if numerics not in have:
        return None
    return ref.scores.get(numerics) or (ref.score if numerics == have[0] else None)


def why_not_comparable(base: RunManifest, other: RunManifest, numerics: str = "exact") -> str | None:
    """None when run `other` can be compared pair by pair with run `base` in `numerics`; else one
    clause saying why not (the dataset, the numerics or the reference score differs)."""
    name = other.name
    if base.dataset.fingerprint != other.dataset.fingerprint:
        source = Path(other.dataset.source).name or "another file"
        return f"{name} was scored on another dataset ({source})"
    mine, theirs = _reference_score(base, numerics), _reference_score(other, numerics)
    if theirs is None:
        return f"{name} was not scored in {numerics} numerics"
    if mine == theirs:
        return None
    return (f"{name} was scored against another reference (another model, or the same one with another "
            "tokenizer, max length or dtype)")


def comparable_runs(manifests: Mapping[str, RunManifest], base: str,
                    numerics: str = "exact") -> tuple[list[str], dict[str, str]]:
    """(runs comparable with `base`, `base` first then the others in the given order; {run: why not}
    for every other run)."""
    offered, refused = [base], {}
    for name, manifest in manifests.items():
        if name == base:
            continue
        why = why_not_comparable(manifests[base], manifest, numerics)
        if why is None:
            offered.append(name)
        else:
            refused[name] = why
    return offered, refused


def refusal_sentence(refused: Mapping[str, str], base: str, limit: int = 3) -> str:
    """The one sentence a page shows for the runs it does not offer (empty when none)."""
    if not refused:
        return ""
    reasons = list(refused.values())[:limit]
    more = f"; and {len(refused) - limit} more" if len(refused) > limit else ""
    return (f"Runs on another dataset or reference than {base} are not offered, since their pairs and reference "
            f"numbers differ: {'; '.join(reasons)}{more}.")
