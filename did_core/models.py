"""Load models and tokenizers safely, fingerprint them, and discover the checkpoints of a TRL run.

`MODEL` may be a local Hugging Face directory, a hub id (when online, or already in the local cache),
a PEFT/LoRA adapter directory (its base from `adapter_config.json`, merged for scoring) or a `.gguf`
file. Safe by default: only safetensors weights; pickled `.bin`/`.pt` weights need `allow_pickle`,
remote code needs `trust_remote_code`. Every failure is an `InputError` with a one-line message.

torch/transformers are imported inside the functions that need them, so that `model_fingerprint`
(used by the dashboard's staleness check) stays cheap to import.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from did_core.config import ModelSpec, ScoreSettings
from did_core.errors import InputError
from did_core.store import fingerprint

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_FINGERPRINT_SUFFIXES = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
_FINGERPRINT_JSON = ("config.json", "generation_config.json", "adapter_config.json")
_EDGE = 1 << 20  # bytes hashed at each end of a weight file in quick mode
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# -- devices and dtypes ---------------------------------------------------------------------------------
def resolve_device(settings: ScoreSettings):
    """`auto` → cuda when available else cpu; `cuda` without a GPU is an InputError."""
    import torch

    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA device is available")
    return torch.device(settings.device)


def _torch_dtype(settings: ScoreSettings):
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[settings.resolved_dtype]


# -- what a path is -------------------------------------------------------------------------------------
def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _looks_like_hub_id(path: str) -> bool:
    return (not os.path.isabs(path) and not path.startswith((".", "~")) and not path.endswith(".gguf")
            and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) is not None)


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: cannot read JSON ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object")
    return obj


def _check_weights(directory: Path, settings: ScoreSettings, adapter: bool = False) -> bool:
    """Refuse pickled-only weights unless allowed; return `use_safetensors` for from_pretrained."""
    files = sorted(p.name for p in directory.iterdir() if p.is_file())
    if adapter:
        files = [f for f in files if f.startswith("adapter_model")]
    if any(f.endswith(".safetensors") for f in files):
        return True
    pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES) and f != "training_args.bin"]
    if not pickled:
        raise InputError(f"{directory}: no model weights (*.safetensors) found")
    if not settings.allow_pickle:
        raise InputError(f"{directory / pickled[0]}: pickled weights can run arbitrary code; "
                         "convert to safetensors or pass --allow-pickle")
    return False


def model_kind(path: str) -> str:
    """What `path` names: "hf" (a model folder), "peft" (an adapter folder), "gguf" or "hub"; an
    InputError when it is none of them (checked without loading anything)."""
    return _model_kind(path)


def _model_kind(path: str) -> str:
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return "gguf"
        raise InputError(f"{path}: not a model (expected a directory or a .gguf file)")
    if p.is_dir():
        if (p / "adapter_config.json").is_file():
            return "peft"
        if (p / "config.json").is_file():
            return "hf"
        raise InputError(f"{path}: not a model directory (no config.json or adapter_config.json)")
    if _looks_like_hub_id(path):
        return "hub"
    raise InputError(f"{path}: no such file or directory")


# -- loading --------------------------------------------------------------------------------------------
def _load_tokenizer(source: str, settings: ScoreSettings, **kw):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=settings.trust_remote_code, **kw)
    except Exception as e:  # transformers raises many types here
        raise InputError(f"{source}: cannot load the tokenizer ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                                   "vocab.json"))


def _from_pretrained(source: str, settings: ScoreSettings, **kw):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=_torch_dtype(settings),
                                                    trust_remote_code=settings.trust_remote_code, **kw)
    except InputError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        if "trust_remote_code" in str(e):  # transformers says so past the first line, which msg keeps
            msg += " (pass --trust-remote-code only if you trust this code)"
        raise InputError(f"{source}: cannot load the model ({type(e).__name__}: {msg})") from None


def _load_hf_dir(directory: Path, settings: ScoreSettings):
    _read_json(directory / "config.json")  # a clear error for a corrupt config before transformers sees it
    use_safetensors = _check_weights(directory, settings)
    model = _from_pretrained(str(directory), settings, use_safetensors=use_safetensors, local_files_only=True)
    # TRL checkpoints carry the tokenizer; a bare checkpoint falls back to its run folder's.
    tok_dir = directory if _has_tokenizer(directory) or not _has_tokenizer(directory.parent) else directory.parent
    return model, _load_tokenizer(str(tok_dir), settings, local_files_only=True)


def _load_peft(directory: Path, settings: ScoreSettings):
    cfg = _read_json(directory / "adapter_config.json")
    base = cfg.get("base_model_name_or_path")
    if not base or not isinstance(base, str):
        raise InputError(f"{directory / 'adapter_config.json'}: no base_model_name_or_path")
    if not Path(base).exists() and (directory / base).exists():
        base = str(directory / base)
    use_safetensors = _check_weights(directory, settings, adapter=True)
    base_model, base_tok = _load_any(base, settings)
    try:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base_model, str(directory), use_safetensors=use_safetensors)
        model = model.merge_and_unload()  # plain module: scoring needs no adapter hooks
    except Exception as e:
        raise InputError(f"{directory}: cannot apply the PEFT adapter ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    tok = _load_tokenizer(str(directory), settings, local_files_only=True) if _has_tokenizer(directory) else base_tok
    return model, tok


def _load_gguf(path: Path, settings: ScoreSettings):
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        raise InputError(f"{path}: loading .gguf needs the `gguf` and `accelerate` packages ({e.name} missing)") from None
    model = _from_pretrained(str(path.parent), settings, gguf_file=path.name, local_files_only=True)
    return model, _load_tokenizer(str(path.parent), settings, gguf_file=path.name, local_files_only=True)


def _load_hub(repo_id: str, settings: ScoreSettings):
    kw: dict[str, Any] = {"local_files_only": _offline()}
    if not settings.allow_pickle:
        kw["use_safetensors"] = True
    try:
        model = _from_pretrained(repo_id, settings, **kw)
    except InputError as e:
        if _offline():
            raise InputError(f"{repo_id}: not a local path, and the hub is offline (HF_HUB_OFFLINE=1) "
                             "with no cached copy") from None
        if not settings.allow_pickle and "safetensors" in str(e).lower():
            raise InputError(f"{repo_id}: no safetensors weights on the hub; pass --allow-pickle to load "
                             "pickled .bin weights") from None
        raise
    return model, _load_tokenizer(repo_id, settings, local_files_only=_offline())


def _load_any(path: str, settings: ScoreSettings):
    kind = _model_kind(path)
    p = Path(path).expanduser()
    if kind == "hf":
        return _load_hf_dir(p, settings)
    if kind == "peft":
        return _load_peft(p, settings)
    if kind == "gguf":
        return _load_gguf(p, settings)
    return _load_hub(path, settings)


def load_model(spec: ModelSpec, settings: ScoreSettings) -> tuple[Any, Any]:
    """(model, tokenizer) for `spec.path`: eval mode, `settings`' dtype (auto → float32), on its device."""
    device = resolve_device(settings)
    model, tok = _load_any(spec.path, settings)
    model = model.to(device=device, dtype=_torch_dtype(settings)).eval()
    model.requires_grad_(False)
    return model, tok


# -- fingerprints ---------------------------------------------------------------------------------------
def _file_digest(path: Path, content: bool) -> dict:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if content or st.st_size <= 2 * _EDGE:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_EDGE))
            f.seek(-_EDGE, os.SEEK_END)
            h.update(f.read(_EDGE))
    entry = {"name": path.name, "size": st.st_size, "sha256": h.hexdigest()}
    if not content:
        entry["mtime_ns"] = st.st_mtime_ns
    return entry


def model_fingerprint(path: str, content: bool = False) -> str:
    """A short hash identifying a model's weights and config.

    Quick mode (default) hashes, per weight/config file: name, size, mtime_ns and the sha256 of its first
    and last MiB — milliseconds for multi-GB files. Trade-off: a `cp` without `-p` or a `touch` changes
    the fingerprint (a needless rescore, never a wrong reuse); an in-place rewrite that keeps size, mtime
    and both ends would go unnoticed (practically impossible). `content=True` hashes every byte and omits
    mtimes: stable across copies and machines, but reads the whole model. A PEFT adapter includes its
    base's fingerprint when the base is local; a hub id uses its cached snapshot (commit) directory.
    """
    p = Path(path).expanduser()
    if not p.exists():
        if not _looks_like_hub_id(path):
            raise InputError(f"{path}: no such file or directory")
        try:
            from huggingface_hub import snapshot_download

            p = Path(snapshot_download(path, local_files_only=True))
        except Exception:
            raise InputError(f"{path}: hub model not in the local cache (cannot fingerprint offline)") from None
    if p.is_file():
        return fingerprint("model-file", _file_digest(p, content))
    files = sorted(f for f in p.iterdir() if f.is_file() and f.name != "training_args.bin"
                   and (f.name in _FINGERPRINT_JSON or f.name.endswith(_FINGERPRINT_SUFFIXES)))
    if not files:
        raise InputError(f"{path}: no model weights or config found")
    parts: list[Any] = [_file_digest(f, content) for f in files]
    if (p / "adapter_config.json").is_file():
        base = _read_json(p / "adapter_config.json").get("base_model_name_or_path")
        if isinstance(base, str) and base:
            try:
                parts.append({"base": model_fingerprint(base, content)})
            except InputError:
                parts.append({"base": base})
    return fingerprint("model-dir", parts)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what decides token ids: vocabulary, added/special tokens and their ids, chat template."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    specials = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    ids = {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")}
    template = getattr(tokenizer, "chat_template", None)
    return fingerprint("tokenizer", vocab, specials, ids, template)


def check_same_tokenizer(ref_tok: Any, tok: Any, name: str) -> None:
    """InputError when checkpoint `name`'s tokenizer is not the reference's (its log-probs would not compare)."""
    if tokenizer_fingerprint(ref_tok) != tokenizer_fingerprint(tok):
        what = "vocabulary"
        if ref_tok.get_vocab() == tok.get_vocab():
            what = "chat template" if getattr(ref_tok, "chat_template", None) != getattr(tok, "chat_template", None) \
                else "special tokens"
        raise InputError(f"{name}: its tokenizer differs from the reference's ({what}); "
                         "every checkpoint must share the reference tokenizer")


# -- TRL runs -------------------------------------------------------------------------------------------
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
        state = _read_json(root / "trainer_state.json") if (root / "trainer_state.json").is_file() else {}
        step = state.get("global_step")
        specs = [ModelSpec(name=root.name, path=str(root), role="policy", step=step if isinstance(step, int) else None)]
        last = root
    else:
        raise InputError(f"{run_dir}: no checkpoint-* model folders in this run folder")
    log_history: list[dict] = []
    for d in (last, root):
        if (d / "trainer_state.json").is_file():
            log_history = list(_read_json(d / "trainer_state.json").get("log_history") or [])
            break
    args: dict = {}
    beta_source = None
    for d in (last, root):
        for name in ("training_args.json", "args.json"):
            if not args and (d / name).is_file():
                args, beta_source = _read_json(d / name), str(d / name)
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
            hint = _read_json(d / "adapter_config.json").get("base_model_name_or_path")
        if hint is None and (d / "README.md").is_file():
            hint = _card_base_model(d / "README.md")
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items() if _plain(v)}
    return RunInfo(run_dir=str(root), checkpoints=specs, beta=beta, beta_source=beta_source if beta else None,
                   log_history=log_history, reference_hint=hint, training_args=plain,
                   args_source=beta_source if args else None)
