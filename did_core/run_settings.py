"""The run's own settings: what the trainer used, resolved once, with where each value came from.

A DPO user compares our numbers with what their trainer logged, so every setting that changes a
number (β, max length, truncation, loss, precision, eval batch) is read from the run folder —
TRL's `training_args.bin` (read by `trl_run.read_training_args`, no code runs), `training_args.json`
or `args.json` — and only an explicit flag or form value replaces it. Each resolved value carries
its source:

- `trainer`: read from the run folder;
- `default`: no run folder (a plain `--policy` list) or the run does not record it: the documented
  default below, which is TRL 1.16's `DPOConfig` default except `precision` (fp32: with no trainer
  to follow, the exact numbers are the honest default);
- `override`: given on the command line or the Score page; the trainer's value is kept beside it
  and shown ("β 0.1 given; the trainer used 0.5").

`FIELDS` is the one definition the CLI's options (`add_cli_options`), the Score page's form and
the job's argument list (`overrides_to_argv`) are built from, so the three cannot drift apart.
Why one module of ~420 lines: the settings, their CLI/form definitions and their resolution
(trainer, default, override) are one concept, kept together so that none of the three drifts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

Source = Literal["trainer", "default", "override"]
Precision = Literal["fp32", "bf16", "fp16"]
Numerics = Literal["exact", "trainer"]
NUMERICS: tuple[str, ...] = ("exact", "trainer")
NUMERICS_LABEL = {
    "exact": "exact (float32 forward, float64 sums)",
    "trainer": "trainer (the forward as the trainer ran it)",
}
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
TRUNCATION_MODES: tuple[str, ...] = ("keep_start", "keep_end")
F_DIVERGENCES: tuple[str, ...] = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


DEFAULT_BETA = 0.1
"""TRL's DPOConfig default β: the one place the project writes it."""


@dataclass(frozen=True)
class RunSettings:
    """The settings of a DPO run that change the numbers we show. Defaults: TRL 1.16's `DPOConfig`
    (except `precision`). Validated on construction."""

    beta: float = DEFAULT_BETA
    """DPO β: implicit reward r(y) = β·(log π(y) − log π_ref(y))."""
    max_length: int | None = 1024
    """Prompt+completion tokens kept per sequence; None keeps all."""
    truncation_mode: str = "keep_start"
    """How sequences over max_length are cut: TRL's `keep_start` (keep_end is deprecated in TRL 1.16)."""
    loss_type: tuple[str, ...] = ("sigmoid",)
    """The trainer's loss type(s); several are summed with `loss_weights`."""
    loss_weights: tuple[float, ...] | None = None
    """One weight per loss type; None: all 1."""
    label_smoothing: float = 0.0
    """ε of the robust / exo_pair / aot losses."""
    f_divergence_type: str = "reverse_kl"
    """TRL's f-divergence regulariser applied to the log-ratios (reverse_kl is standard DPO)."""
    f_alpha_divergence_coef: float = 0.5
    """α of the alpha-divergence."""
    discopop_tau: float = 0.05
    """τ of the DiscoPOP loss."""
    ld_alpha: float | None = None
    """LD-DPO's weight on tokens past the shared length (None: off)."""
    use_weighting: bool = False
    """WPO weighting (needs per-token log Σp², which we do not store)."""
    precision: str = "fp32"
    """The trainer's autocast: bf16 or fp16 mixed precision, or fp32."""
    eval_batch_size: int = 8
    """Pairs per evaluation batch (`per_device_eval_batch_size`): fixes how the trainer padded and
    averaged its logged eval metrics."""
    pad_to_multiple_of: int | None = None
    """The collator pads each batch to a multiple of this."""
    precompute_ref_log_probs: bool = False
    """The trainer scored the reference once before training instead of at every step."""
    sync_ref_model: bool = False
    """TR-DPO: the trainer moved its reference during training (we score against the fixed one)."""
    padding_side: str = "right"
    """TRL 1.16's DPO collator always pads on the right."""
    chat_template: str | None = None
    """A short hash of the run's chat template (None: the tokenizer has none)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, int | float) and math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"max_length must be an integer >= 2 or none, got {self.max_length!r}")
        if self.truncation_mode not in TRUNCATION_MODES:
            raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {self.truncation_mode!r}")
        if not self.loss_type or not all(isinstance(t, str) and t for t in self.loss_type):
            raise ValueError(f"loss_type must name at least one loss, got {self.loss_type!r}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights must have one weight per loss type ({len(self.loss_type)}), "
                             f"got {len(self.loss_weights)}")
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {self.label_smoothing}")
        if self.f_divergence_type not in F_DIVERGENCES:
            raise ValueError(f"f_divergence_type must be one of {F_DIVERGENCES}, got {self.f_divergence_type!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be an integer >= 1, got {self.eval_batch_size!r}")
        if self.pad_to_multiple_of is not None and (not isinstance(self.pad_to_multiple_of, int)
                                                    or self.pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be an integer >= 1 or none, got {self.pad_to_multiple_of!r}")

    @property
    def reduced_precision(self) -> bool:
        return self.precision != "fp32"

    def default_numerics(self) -> tuple[str, ...]:
        """`both` when the trainer ran in reduced precision (its logged numbers are not the exact ones)."""
        return ("exact", "trainer") if self.reduced_precision else ("exact",)

    def loss_label(self) -> str:
        """The run's loss as the pages name it: `sigmoid`, or `0.5·ipo + 1·sft`."""
        if len(self.loss_type) == 1 and not self.loss_weights:
            return self.loss_type[0]
        weights = self.loss_weights or (1.0,) * len(self.loss_type)
        return " + ".join(f"{w:g}·{t}" for t, w in zip(self.loss_type, weights, strict=True))

    def tokenization_fields(self) -> dict:
        """What changes the scored tokens (enters every score fingerprint)."""
        return {"max_length": self.max_length, "truncation_mode": self.truncation_mode}

    def trainer_numerics_fields(self) -> dict:
        """What changes the trainer-numerics forward beyond the tokens (enters its fingerprint)."""
        return {"precision": self.precision, "eval_batch_size": self.eval_batch_size,
                "pad_to_multiple_of": self.pad_to_multiple_of}

    def loss_kwargs(self) -> dict:
        """Keyword arguments of `losses.trainer_loss` for this run's loss."""
        return {"loss_types": self.loss_type, "loss_weights": self.loss_weights, "beta": self.beta,
                "label_smoothing": self.label_smoothing, "f_divergence_type": self.f_divergence_type,
                "f_alpha_divergence_coef": self.f_alpha_divergence_coef, "discopop_tau": self.discopop_tau}


# -- the one definition of every user-settable field ------------------------------------------------------
@dataclass(frozen=True)
class SettingField:
    """A `RunSettings` field a user may override: its flag, how its text parses, its help."""

    name: str
    flag: str
    help: str
    kind: Literal["float", "int", "int_or_none", "choice", "list_str", "list_float"]
    choices: tuple[str, ...] = ()
    label: str = ""
    """How the pages name it."""


def _fmt_choices(c: Sequence[str]) -> str:
    return "|".join(c)


FIELDS: tuple[SettingField, ...] = (
    SettingField("beta", "--beta", "DPO β", "float", label="β"),
    SettingField("max_length", "--max-length", "prompt+completion tokens kept per sequence ('none' keeps all)",
                 "int_or_none", label="max length"),
    SettingField("truncation_mode", "--truncation-mode", "how sequences over max length are cut", "choice",
                 TRUNCATION_MODES, label="truncation"),
    SettingField("loss_type", "--loss-type", "the trainer's loss type(s), summed with --loss-weights", "list_str",
                 label="loss type"),
    SettingField("loss_weights", "--loss-weights", "one weight per loss type", "list_float", label="loss weights"),
    SettingField("label_smoothing", "--label-smoothing", "ε of the robust / exo_pair losses", "float",
                 label="label smoothing"),
    SettingField("f_divergence_type", "--f-divergence-type", "f-divergence applied to the log-ratios", "choice",
                 F_DIVERGENCES, label="f-divergence"),
    SettingField("f_alpha_divergence_coef", "--f-alpha-divergence-coef", "α of the alpha-divergence", "float",
                 label="α-divergence coef"),
    SettingField("discopop_tau", "--discopop-tau", "τ of the DiscoPOP loss", "float", label="DiscoPOP τ"),
    SettingField("precision", "--precision", "the trainer's autocast, for the trainer numerics", "choice",
                 PRECISIONS, label="precision"),
    SettingField("eval_batch_size", "--eval-batch-size",
                 "pairs per batch in the trainer numerics (the trainer's per_device_eval_batch_size)", "int",
                 label="eval batch size"),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
LABELS = {f.name: f.label or f.name for f in FIELDS} | {
    "ld_alpha": "LD-DPO α", "use_weighting": "WPO weighting", "pad_to_multiple_of": "pad to multiple of",
    "precompute_ref_log_probs": "precomputed reference", "sync_ref_model": "TR-DPO reference sync",
    "padding_side": "padding side", "chat_template": "chat template"}


def parse_value(f: SettingField, text: str | Sequence[str]) -> Any:
    """A field's value from its command-line or form text; ValueError with the field named when bad."""
    try:
        if f.kind == "float":
            return float(text)  # type: ignore[arg-type]
        if f.kind == "int":
            return int(text)  # type: ignore[arg-type]
        if f.kind == "int_or_none":
            t = str(text).strip().lower()
            return None if t in ("none", "null", "0", "") else int(t)
        if f.kind == "choice":
            if text not in f.choices:
                raise ValueError
            return text
        items = [text] if isinstance(text, str) else list(text)
        items = [p for it in items for p in str(it).replace(",", " ").split()]
        if not items:
            raise ValueError
        return tuple(items) if f.kind == "list_str" else tuple(float(x) for x in items)
    except ValueError:
        want = {"float": "a number", "int": "a whole number", "int_or_none": "a whole number or 'none'",
                "choice": f"one of {_fmt_choices(f.choices)}", "list_str": "one or more names",
                "list_float": "one or more numbers"}[f.kind]
        raise ValueError(f"{f.flag} must be {want}, got {text!r}") from None


def format_value(f: SettingField, value: Any) -> list[str]:
    """The command-line words that give `value` for field `f` (the inverse of `parse_value`)."""
    if f.kind in ("list_str", "list_float"):
        return [f.flag, *(repr(float(v)) if f.kind == "list_float" else str(v) for v in value)]
    if f.kind == "int_or_none":
        return [f.flag, "none" if value is None else str(int(value))]
    if f.kind == "float":
        return [f.flag, repr(float(value))]
    return [f.flag, str(value)]


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """One option per FIELDS entry; absent means "the trainer's value" (the default stays None)."""
    for f in FIELDS:
        nargs = "+" if f.kind.startswith("list_") else None
        choices = f.choices or None
        parser.add_argument(f.flag, dest=f"rs_{f.name}", default=None, nargs=nargs, choices=choices,
                            metavar=None if choices else f.name.upper(),
                            help=f"{f.help} (default: the trainer's, else {default_text(f.name)})")


def default_text(name: str) -> str:
    v = getattr(RunSettings(), name)
    if isinstance(v, tuple):
        return " ".join(map(str, v))
    return "none" if v is None else str(v)


def overrides_from_namespace(ns: argparse.Namespace) -> dict[str, Any]:
    """The overrides a parsed command line gives (only the options that were given)."""
    out = {}
    for f in FIELDS:
        raw = getattr(ns, f"rs_{f.name}", None)
        if raw is not None:
            out[f.name] = parse_value(f, raw)
    return out


def overrides_to_argv(overrides: Mapping[str, Any]) -> list[str]:
    """Command-line words for `overrides` (a field absent from it is left to the trainer)."""
    unknown = sorted(set(overrides) - set(FIELD_BY_NAME))
    if unknown:
        raise ValueError(f"not a run setting: {unknown[0]}")
    return [w for f in FIELDS if f.name in overrides for w in format_value(f, overrides[f.name])]


# -- reading the trainer's values -----------------------------------------------------------------------
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def from_training_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """RunSettings fields from a saved `DPOConfig` (its plain fields, as `read_training_args` returns them).

    Only what the file records is returned; a field absent or of an unexpected type is left out.
    `precision`: `bf16` True → bf16, else `fp16` True → fp16, else fp32 (TRL 1.16 turns bf16 on by
    default, even on CPU).
    """
    out: dict[str, Any] = {}
    if (b := _num(args.get("beta"))) is not None and b > 0:
        out["beta"] = b
    if "max_length" in args and (args["max_length"] is None or isinstance(args["max_length"], int)):
        out["max_length"] = args["max_length"]
    if isinstance(args.get("truncation_mode"), str):
        out["truncation_mode"] = args["truncation_mode"]
    lt = args.get("loss_type")
    if isinstance(lt, str):
        out["loss_type"] = (lt,)
    elif isinstance(lt, list | tuple) and lt and all(isinstance(t, str) for t in lt):
        out["loss_type"] = tuple(lt)
    lw = args.get("loss_weights")
    if isinstance(lw, list | tuple) and all(_num(w) is not None for w in lw):
        out["loss_weights"] = tuple(float(w) for w in lw)
    for name in ("label_smoothing", "f_alpha_divergence_coef", "discopop_tau"):
        if (v := _num(args.get(name))) is not None:
            out[name] = v
    if "ld_alpha" in args and (args["ld_alpha"] is None or _num(args["ld_alpha"]) is not None):
        out["ld_alpha"] = None if args["ld_alpha"] is None else float(args["ld_alpha"])
    for name in ("f_divergence_type",):
        if isinstance(args.get(name), str):
            out[name] = args[name]
    for name in ("use_weighting", "precompute_ref_log_probs", "sync_ref_model"):
        if isinstance(args.get(name), bool):
            out[name] = args[name]
    if isinstance(args.get("bf16"), bool) or isinstance(args.get("fp16"), bool):
        out["precision"] = "bf16" if args.get("bf16") is True else "fp16" if args.get("fp16") is True else "fp32"
    if isinstance(args.get("per_device_eval_batch_size"), int) and args["per_device_eval_batch_size"] >= 1:
        out["eval_batch_size"] = args["per_device_eval_batch_size"]
    p = args.get("pad_to_multiple_of")
    if p is None and "pad_to_multiple_of" in args or isinstance(p, int) and not isinstance(p, bool):
        out["pad_to_multiple_of"] = p
    elif p == "auto":  # TRL resolves "auto" to None off Neuron
        out["pad_to_multiple_of"] = None
    return out


# -- resolution -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedSettings:
    """The run's settings, each value's source, and the trainer's value where one was read."""

    settings: RunSettings
    sources: dict[str, str]
    """field → "trainer" | "default" | "override"."""
    trainer: dict[str, Any] = field(default_factory=dict)
    """field → the trainer's value, for every field the run folder recorded."""
    origin: str | None = None
    """The file the trainer's values came from (None without a run folder)."""

    def overrides(self) -> dict[str, Any]:
        return {k: getattr(self.settings, k) for k, s in self.sources.items() if s == "override"}

    def notes(self) -> list[str]:
        """One sentence per override: "β 0.1 given; the trainer used 0.5" (or "…; the run does not record it")."""
        out = []
        for name, src in self.sources.items():
            if src != "override":
                continue
            given = _show(getattr(self.settings, name))
            label = LABELS.get(name, name)
            if name in self.trainer:
                out.append(f"{label} {given} given; the trainer used {_show(self.trainer[name])}")
            elif self.origin:
                out.append(f"{label} {given} given; the run does not record it (default {_show(_default(name))})")
            else:
                out.append(f"{label} {given} given (no run folder; default {_show(_default(name))})")
        return out

    def to_manifest(self) -> dict[str, dict]:
        """JSON-safe {field: {"value", "source", "trainer"}} for run.json and exports."""
        out = {}
        for f in fields(RunSettings):
            v = getattr(self.settings, f.name)
            t = self.trainer.get(f.name)
            out[f.name] = {"value": list(v) if isinstance(v, tuple) else v, "source": self.sources[f.name],
                           "trainer": list(t) if isinstance(t, tuple) else t}
        return out


def _default(name: str) -> Any:
    return getattr(RunSettings(), name)


def _show(v: Any) -> str:
    if isinstance(v, tuple | list):
        return " ".join(_show(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def resolve(trainer_values: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None, *,
            origin: str | None = None, chat_template: str | None = None) -> ResolvedSettings:
    """Trainer values over the defaults, overrides over both; ValueError (naming the field) when the
    result is not a valid RunSettings. `chat_template` is the run tokenizer's template hash."""
    trainer = dict(trainer_values or {})
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {f.name for f in fields(RunSettings)})
    if unknown:
        raise ValueError(f"not a run setting: {unknown[0]}")
    base = RunSettings()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if chat_template is not None or origin:
        trainer.setdefault("chat_template", chat_template)
    for f in fields(RunSettings):
        if f.name in overrides:
            values[f.name], sources[f.name] = overrides[f.name], "override"
        elif f.name in trainer:
            values[f.name], sources[f.name] = trainer[f.name], "trainer"
        else:
            values[f.name], sources[f.name] = getattr(base, f.name), "default"
    if "loss_type" in values and isinstance(values["loss_type"], list):
        values["loss_type"] = tuple(values["loss_type"])
    # A trainer's weights belong to its loss types: overriding the types alone drops them.
    if sources["loss_type"] == "override" and sources["loss_weights"] == "trainer":
        values["loss_weights"], sources["loss_weights"] = None, "default"
    settings = RunSettings(**values)
    return ResolvedSettings(settings=settings, sources=sources, trainer=trainer, origin=origin)


def from_manifest(entry: Mapping[str, Any] | None, beta: float | None = None) -> ResolvedSettings:
    """The ResolvedSettings a run.json recorded (`run_settings`); a run scored before they were
    recorded gets its β with source "trainer" and defaults for the rest."""
    if not entry:
        trainer = {"beta": float(beta)} if beta else {}
        return resolve(trainer, {})
    values, sources, trainer = {}, {}, {}
    names = {f.name for f in fields(RunSettings)}
    for name, rec in entry.items():
        if name not in names or not isinstance(rec, Mapping):
            continue
        v, t = rec.get("value"), rec.get("trainer")
        values[name] = tuple(v) if isinstance(v, list) else v
        sources[name] = str(rec.get("source", "default"))
        if t is not None or sources[name] == "trainer":
            trainer[name] = tuple(t) if isinstance(t, list) else t
    settings = replace(RunSettings(), **values)
    for f in fields(RunSettings):
        sources.setdefault(f.name, "default")
    return ResolvedSettings(settings=settings, sources=sources, trainer=trainer)


def as_dict(settings: RunSettings) -> dict:
    return asdict(settings)
