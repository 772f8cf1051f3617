"""The plan half of a scoring job: what to score and with which settings, decided and checked before
any model is loaded (no torch here, so the Score page can check a form without importing it).

`score.run_score` executes the plan; `preflight` is what the Score page runs before it starts a job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from did_core import losses, run_settings
from did_core.config import ModelSpec
from did_core.errors import InputError
from did_core.run_settings import ResolvedSettings, RunSettings
from did_core.trl_run import RunInfo, discover_run


def plan_models(reference: str, policies: Sequence[str] | None, run_dir: str | None,
                pi_l: str | None = None) -> tuple[ModelSpec, list[ModelSpec], RunInfo | None]:
    """The reference and policy specs, and what a TRL output dir records (`trl_run.RunInfo`) when given.

    `pi_l` (a model of the rejected-response generator) is scored like a policy, last, without a step.
    """
    if not policies and not run_dir:
        raise InputError("give the checkpoints to score: --policy MODEL ... or --run TRL_OUTPUT_DIR")
    ref = ModelSpec(name=str(reference), path=str(reference), role="reference")
    specs: list[ModelSpec] = []
    info = discover_run(run_dir) if run_dir else None
    if info:
        specs.extend(info.checkpoints)
    for p in policies or []:
        specs.append(ModelSpec(name=str(p), path=str(p), role="policy", step=_step_from_name(p)))
    if pi_l:
        specs.append(ModelSpec(name=str(pi_l), path=str(pi_l), role="policy", step=None))
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"checkpoint given twice: {sorted(dup)[0]}")
    return ref, specs, info


def resolve_settings(info: RunInfo | None, overrides: Mapping[str, Any] | None,
                     chat_template: str | None = None) -> ResolvedSettings:
    """The run's settings: the trainer's (from `info`), replaced by `overrides`; InputError when invalid."""
    trainer = run_settings.from_training_args(info.training_args) if info else {}
    try:
        resolved = run_settings.resolve(trainer, overrides, origin=info.args_source if info else None,
                                        chat_template=chat_template)
        losses.check_run_loss(resolved.settings)
    except ValueError as exc:
        raise InputError(f"bad setting: {exc}") from None
    return resolved


def resolve_numerics(numerics: Sequence[str] | str | None, rs: RunSettings) -> tuple[str, ...]:
    """`None` or "auto": both when the trainer ran in reduced precision, else exact; "both": both."""
    if numerics in (None, "auto"):
        return rs.default_numerics()
    if numerics == "both":
        return ("exact", "trainer")
    items = (numerics,) if isinstance(numerics, str) else tuple(numerics)
    bad = [n for n in items if n not in run_settings.NUMERICS]
    if bad or not items:
        raise InputError(f"--numerics must be exact, trainer or both, got {bad[0] if bad else numerics!r}")
    return tuple(n for n in run_settings.NUMERICS if n in items)


def preflight(data: str, reference: str, *, policies: Sequence[str] | None = None, run_dir: str | None = None,
              overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, str], ResolvedSettings | None]:
    """What a job would refuse, found before it starts and without loading a model: {field: `error:`
    message} for "data", "reference", "policies", "run_dir", "settings" (empty when all is well), and
    the run's resolved settings when they could be read."""
    from did_core.fingerprints import looks_like_hub_id
    from did_core.models import model_kind

    errors: dict[str, str] = {}
    if not data:
        errors["data"] = "error: give a dataset (upload or path)"
    elif not Path(data).expanduser().exists() and not looks_like_hub_id(data):
        errors["data"] = f"error: {data}: no such file or directory"
    for field_name, paths in (("reference", [reference] if reference else []), ("policies", list(policies or []))):
        if field_name == "reference" and not reference:
            errors["reference"] = "error: give a reference model"
        for p in paths:
            try:
                model_kind(p)
            except InputError as exc:
                errors.setdefault(field_name, f"error: {exc}")
    if bool(policies) == bool(run_dir):
        errors.setdefault("run_dir", "error: give either a TRL output folder or checkpoints, not both or neither")
        return errors, None
    resolved = None
    try:
        info = discover_run(run_dir) if run_dir else None
    except InputError as exc:
        errors["run_dir"] = f"error: {exc}"
        return errors, None
    try:
        resolved = resolve_settings(info, overrides)
    except InputError as exc:
        errors["settings"] = f"error: {exc}"
    return errors, resolved


def _step_from_name(path: str) -> int | None:
    base = Path(path).name
    if base.startswith("checkpoint-") and base[len("checkpoint-"):].isdigit():
        return int(base[len("checkpoint-"):])
    return None


def default_run_name(reference: ModelSpec, policies: list[ModelSpec], run_dir: str | None, data: str) -> str:
    stem = Path(run_dir).name if run_dir else Path(policies[0].path).name
    return f"{stem}__{Path(data).name.split('.')[0]}".replace(" ", "_")


def approximation_notes(rs: RunSettings) -> list[str]:
    """What the product cannot reproduce of this run, said where the numbers are shown."""
    notes = []
    if rs.sync_ref_model:
        notes.append("the trainer moved its reference during training (TR-DPO, sync_ref_model); "
                     "rewards and losses here are against the fixed reference given")
    why = losses.check_run_loss(rs)
    if why:
        notes.append(f"the trainer's loss ({rs.loss_label()}) is not shown per pair: {why}")
    return notes
