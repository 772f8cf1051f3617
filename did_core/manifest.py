"""`RunManifest`: a run's `runs/<name>/run.json` (docs/REFERENCE.md §8) as one typed record.

Every writer (the `score` and `sample` jobs, the demo build, the live callback, the synthetic test
workspaces) builds one and `Workspace.write_run` stores `to_json()`; every reader gets one from
`Workspace.run`, built by `from_json`, which checks the fields a reader relies on and fills the
optional ones a run scored by an older version lacks. Keys this version does not know are kept in
`other` and written back unchanged, so an older tool never drops what a newer one recorded; the
optional keys a file lacked are kept in `missing` and left out again, so a run.json read and written
back is the same JSON (a reader sees the filled default either way).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from did_core.errors import InputError
from did_core.files import pid_alive

__all__ = ["RunManifest", "ModelEntry", "DatasetInfo"]


@dataclass(frozen=True)
class ModelEntry:
    """The reference or one checkpoint of a run: `score` is its primary numerics' score fingerprint,
    `scores` the fingerprint per numerics ("exact", "trainer"; an entry written before there were two
    gets {"exact": score})."""

    name: str
    path: str
    step: int | None
    score: str
    scores: Mapping[str, str]
    other: Mapping[str, Any] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()

    _OPTIONAL = ("path", "step", "scores")

    def to_json(self) -> dict:
        out = {"name": self.name, "path": self.path, "step": self.step, "score": self.score,
               "scores": dict(self.scores)}
        return {k: v for k, v in out.items() if k not in self.missing} | dict(self.other)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "run.json") -> ModelEntry:
        _need(d, ("name", "score"), where)
        step = d.get("step")
        known = {"name", "score", *cls._OPTIONAL}
        return cls(name=str(d["name"]), path=str(d.get("path", "")),
                   step=None if step is None else int(step), score=str(d["score"]),
                   scores=dict(d.get("scores") or {"exact": d["score"]}),
                   other={k: v for k, v in d.items() if k not in known},
                   missing=frozenset(k for k in cls._OPTIONAL if k not in d))


@dataclass(frozen=True)
class DatasetInfo:
    """The probe a run scored: `fingerprint` names datasets/<fingerprint>.parquet."""

    fingerprint: str
    source: str = ""
    n_pairs: int = 0
    conversational: bool = False
    other: Mapping[str, Any] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()

    _OPTIONAL = ("source", "n_pairs", "conversational")

    def to_json(self) -> dict:
        out = {"fingerprint": self.fingerprint, "source": self.source, "n_pairs": self.n_pairs,
               "conversational": self.conversational}
        return {k: v for k, v in out.items() if k not in self.missing} | dict(self.other)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "run.json") -> DatasetInfo:
        _need(d, ("fingerprint",), where)
        known = {"fingerprint", *cls._OPTIONAL}
        return cls(fingerprint=str(d["fingerprint"]), source=str(d.get("source", "")),
                   n_pairs=int(d.get("n_pairs", 0)), conversational=bool(d.get("conversational", False)),
                   other={k: v for k, v in d.items() if k not in known},
                   missing=frozenset(k for k in cls._OPTIONAL if k not in d))


_OPTIONAL_KEYS = ("created", "beta", "settings", "run_settings", "settings_origin", "overrides", "notes", "numerics",
                  "numerics_detail", "checkpoints", "trainer_log_history", "samples", "extra")
_LIVE_KEYS = ("live", "last_write", "live_info")
NEW_RUN_MISSING = frozenset({"samples"})
"""What a new run's run.json leaves out: `samples` until a sample job adds some."""


@dataclass(frozen=True)
class RunManifest:
    """A scored run. `checkpoints` are in the order the run lists them (by step for TRL runs and live
    runs). `live`, `last_write` and `live_info` are set for a live run only (docs/REFERENCE.md §8).
    `samples` are the sample job's records ({"model", "step", "samples", k, seed, …}), `extra` what a
    writer added (truncation report, the demo's π_L and exact table, …)."""

    name: str
    dataset: DatasetInfo
    reference: ModelEntry
    checkpoints: tuple[ModelEntry, ...] = ()
    created: str = ""
    beta: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    run_settings: Mapping[str, Any] | None = None
    settings_origin: Any = None
    overrides: tuple = ()
    notes: tuple[str, ...] = ()
    numerics: tuple[str, ...] = ("exact",)
    numerics_detail: Mapping[str, Any] | None = None
    trainer_log_history: tuple = ()
    samples: tuple = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    live: bool | None = None
    last_write: str | None = None
    live_info: Mapping[str, Any] | None = None
    other: Mapping[str, Any] = field(default_factory=dict)
    missing: frozenset[str] = NEW_RUN_MISSING
    """The optional keys `to_json` leaves out (those the parsed file lacked); `replace` takes out the
    ones it sets."""

    @property
    def is_live(self) -> bool:
        """Whether the live callback wrote this run (it has `live`, true or false)."""
        return self.live is not None

    @property
    def writer_gone(self) -> bool:
        """Whether run.json says `live` but the training process that writes it is gone (killed, or
        crashed before `train()` returned): its `live_info` names a pid on this host that no longer
        runs. False when it runs, when the run is not live, and when that cannot be told (written on
        another host, or by a version that did not record the pid)."""
        info = self.live_info or {}
        pid, host = info.get("pid"), info.get("host")
        return bool(self.live) and isinstance(pid, int) and host == socket.gethostname() and not pid_alive(pid)

    @property
    def models(self) -> tuple[ModelEntry, ...]:
        """The reference, then the checkpoints."""
        return (self.reference, *self.checkpoints)

    def model(self, name: str) -> ModelEntry:
        """The checkpoint named `name`, else the reference if it is named so; InputError otherwise."""
        for e in (*self.checkpoints, self.reference):
            if e.name == name:
                return e
        raise InputError(f"run {self.name!r} has no model {name!r}")

    def score_of(self, entry: ModelEntry, numerics: str | None = None) -> str:
        """The score fingerprint of a reference or checkpoint entry in `numerics` (None: the primary)."""
        numerics = numerics or self.numerics[0]
        if numerics not in self.numerics:
            raise InputError(f"run {self.name!r} was not scored in {numerics} numerics "
                             f"(it has {', '.join(self.numerics)})")
        return entry.scores.get(numerics) or entry.score

    def resolved_settings(self):
        """The run's resolved settings (`run_settings.ResolvedSettings`) as run.json recorded them."""
        from did_core import run_settings

        return run_settings.from_manifest(self.run_settings, self.beta)

    def replace(self, **changes) -> RunManifest:
        """A copy with `changes`; the keys it sets are written by `to_json` from then on."""
        return dataclasses.replace(self, **changes, missing=self.missing - changes.keys())

    def to_json(self) -> dict:
        """The run.json object (plain dicts and lists)."""
        out: dict[str, Any] = {
            "name": self.name, "created": self.created, "dataset": self.dataset.to_json(), "beta": self.beta,
            "settings": dict(self.settings), "run_settings": _plain(self.run_settings),
            "settings_origin": self.settings_origin, "overrides": list(self.overrides), "notes": list(self.notes),
            "numerics": list(self.numerics), "numerics_detail": _plain(self.numerics_detail),
            "reference": self.reference.to_json(), "checkpoints": [c.to_json() for c in self.checkpoints],
            "trainer_log_history": list(self.trainer_log_history), "samples": list(self.samples),
            "extra": dict(self.extra),
        }
        if self.is_live:
            out |= {"live": self.live, "last_write": self.last_write, "live_info": _plain(self.live_info)}
        return {k: v for k, v in out.items() if k not in self.missing} | dict(self.other)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "run.json") -> RunManifest:
        """The manifest in `d` (a parsed run.json); InputError naming `where` when a field a reader
        needs is missing or of the wrong kind."""
        if not isinstance(d, Mapping):
            raise InputError(f"{where}: not a JSON object")
        _need(d, ("name", "dataset", "reference"), where)
        try:
            checkpoints = tuple(ModelEntry.from_json(c, where) for c in d.get("checkpoints") or [])
            beta = d.get("beta")
            if beta is not None and (isinstance(beta, bool) or not isinstance(beta, int | float)):
                raise ValueError(f"beta is {beta!r}, not a number")
            known = {f.name for f in dataclasses.fields(cls)} - {"other", "missing"}
            missing = {k for k in _OPTIONAL_KEYS if k not in d}
            if "live" in d:
                missing |= {k for k in _LIVE_KEYS if k not in d}
            return cls(
                name=str(d["name"]), dataset=DatasetInfo.from_json(d["dataset"], where),
                reference=ModelEntry.from_json(d["reference"], where), checkpoints=checkpoints,
                created=str(d.get("created", "")), beta=beta,
                settings=dict(d.get("settings") or {}), run_settings=d.get("run_settings"),
                settings_origin=d.get("settings_origin"), overrides=tuple(d.get("overrides") or ()),
                notes=tuple(d.get("notes") or ()), numerics=tuple(d.get("numerics") or ("exact",)),
                numerics_detail=d.get("numerics_detail"),
                trainer_log_history=tuple(d.get("trainer_log_history") or ()),
                samples=tuple(d.get("samples") or ()), extra=dict(d.get("extra") or {}),
                live=None if d.get("live") is None else bool(d["live"]), last_write=d.get("last_write"),
                live_info=d.get("live_info"), other={k: v for k, v in d.items() if k not in known},
                missing=frozenset(missing))
        except (TypeError, ValueError, AttributeError) as e:
            raise InputError(f"{where}: {e}") from None


def _need(d: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(d, Mapping):
        raise InputError(f"{where}: expected a JSON object, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")


def _plain(v: Any) -> Any:
    return dict(v) if isinstance(v, Mapping) else v


def live_writer() -> dict[str, Any]:
    """What a live run's `live_info` records of the process writing it (`RunManifest.writer_gone`)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}
