"""What a TRL output folder records: its `checkpoint-N` folders (by step), the trainer's arguments
(β, loss, precision, … from `training_args.json`/`args.json`, or `training_args.bin` read without
running any of its code), its logged history and the reference it names.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from did_core.config import ModelSpec
from did_core.errors import InputError
from did_core.files import read_json

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RunInfo:
    """What `discover_run` found in a TRL output folder."""

    run_dir: str
    checkpoints: list[ModelSpec]
    """`checkpoint-N` sub-folders ordered by N (or the folder itself when it holds the only model)."""
    beta: float | None = None
    """The trainer's β, when found."""
    beta_source: str | None = None
    """The file β came from."""
    log_history: list[dict] = field(default_factory=list)
    """trainer_state.json's log_history from the last checkpoint."""
    reference_hint: str | None = None
    """The base/reference model named by the run (adapter_config.json or the model card), if any."""
    training_args: dict = field(default_factory=dict)
    """Plain fields of the saved training arguments (JSON-safe scalars and lists of them)."""
    args_source: str | None = None
    """The file the training arguments came from."""


class _Stub:
    """Stands in for every global a pickle names: nothing is imported, so no code from the file runs."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | type(None)):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS on a dict subclass
        self.__dict__.setdefault("_items", {})[key] = value

    def extend(self, values: Any) -> None:  # APPENDS on a list subclass
        self.__dict__.setdefault("_list", []).extend(values)

    def append(self, value: Any) -> None:
        self.extend([value])


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        return type(name, (_Stub,), {"__module__": f"stub.{module}"})

    def persistent_load(self, pid: Any) -> None:
        return None


def _plain(v: Any) -> bool:
    """A JSON-safe scalar, or a list of them (TRL's `loss_type` and `loss_weights` are lists)."""
    scalar = (str, int, float, bool)
    return v is None or isinstance(v, scalar) or (isinstance(v, list | tuple) and all(isinstance(x, scalar) for x in v))


def read_training_args(path: str | Path) -> dict:
    """Plain fields of a `training_args.bin` (torch.save of TrainingArguments/DPOConfig): scalars and
    lists of scalars.

    TRL 1.16 keeps β only in this pickled file (trainer_state.json has none). It is parsed with an
    unpickler that maps every global to an inert stub: no class is imported and no code runs, so it is
    safe without --allow-pickle. Only str/int/float/bool/None fields and lists of them are returned.
    """
    path = Path(path)
    if path.stat().st_size > 16 << 20:
        raise InputError(f"{path}: too large for training arguments")
    blobs: list[bytes] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            blobs = [z.read(n) for n in z.namelist() if n.endswith("data.pkl")]
    else:
        blobs = [path.read_bytes()]
    for blob in blobs:
        f = io.BytesIO(blob)
        for _ in range(5):  # the legacy torch format is several pickles in a row; the object comes last
            try:
                obj = _StubUnpickler(f).load()
            except Exception:
                break
            if isinstance(obj, _Stub):
                return {k: v for k, v in vars(obj).items() if not k.startswith("_") and _plain(v)}
    raise InputError(f"{path}: no training arguments found in this file")


def _card_base_model(readme: Path) -> str | None:
    """`base_model:` from a model card's YAML front matter (TRL writes one)."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.match(r"---\n(.*?)\n---", text, re.S)
    hit = re.search(r"^base_model:\s*(.+)$", m.group(1), re.M) if m else None
    value = hit.group(1).strip().strip("'\"") if hit else ""
    return value if value and not value.startswith("[") else None


def discover_run(run_dir: str) -> RunInfo:
    """Find a TRL output folder's checkpoints (by step), β, trainer log history and reference hint.

    β: `training_args.json`/`args.json` when present, else `training_args.bin` read safely (see
    `read_training_args`), from the last checkpoint or the run folder. Log history: trainer_state.json of
    the last checkpoint (or the run folder). Reference hint: the PEFT adapter's base, else the model
    card's `base_model`. A folder without `checkpoint-*` that is itself a model is one checkpoint.
    """
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"{run_dir}: run folder not found")
    found = sorted(((int(m.group(1)), p) for p in root.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))), key=lambda t: t[0])
    found = [(s, p) for s, p in found if (p / "config.json").is_file() or (p / "adapter_config.json").is_file()]
    if found:
        specs = [ModelSpec(name=p.name, path=str(p), role="policy", step=s) for s, p in found]
        last = found[-1][1]
    elif (root / "config.json").is_file() or (root / "adapter_config.json").is_file():
        state = read_json(root / "trainer_state.json") if (root / "trainer_state.json").is_file() else {}
        step = state.get("global_step")
        specs = [ModelSpec(name=root.name, path=str(root), role="policy", step=step if isinstance(step, int) else None)]
        last = root
    else:
        raise InputError(f"{run_dir}: no checkpoint-* model folders in this run folder")
    log_history: list[dict] = []
    for d in (last, root):
        if (d / "trainer_state.json").is_file():
            log_history = list(read_json(d / "trainer_state.json").get("log_history") or [])
            break
    args: dict = {}
    beta_source = None
    for d in (last, root):
        for name in ("training_args.json", "args.json"):
            if not args and (d / name).is_file():
                args, beta_source = read_json(d / name), str(d / name)
        if not args and (d / "training_args.bin").is_file():
            try:
                args, beta_source = read_training_args(d / "training_args.bin"), str(d / "training_args.bin")
            except InputError:
                pass
    beta = args.get("beta")
    beta = float(beta) if isinstance(beta, int | float) and not isinstance(beta, bool) and beta > 0 else None
    hint = None
    for d in (last, root):
        if hint is None and (d / "adapter_config.json").is_file():
            hint = read_json(d / "adapter_config.json").get("base_model_name_or_path")
        if hint is None and (d / "README.md").is_file():
            hint = _card_base_model(d / "README.md")
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items() if _plain(v)}
    return RunInfo(run_dir=str(root), checkpoints=specs, beta=beta, beta_source=beta_source if beta else None,
                   log_history=log_history, reference_hint=hint, training_args=plain,
                   args_source=beta_source if args else None)
