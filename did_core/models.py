"""Load models and tokenizers safely (fingerprints: did_core/fingerprints.py; TRL run folders:
did_core/trl_run.py).

`MODEL` may be a local Hugging Face directory, a hub id (when online, or already in the local cache),
a PEFT/LoRA adapter directory (its base from `adapter_config.json`, merged for scoring) or a `.gguf`
file. Safe by default: only safetensors weights; pickled `.bin`/`.pt` weights need `allow_pickle`,
remote code needs `trust_remote_code`. Every failure is an `InputError` with a one-line message.

torch/transformers are imported inside the functions that need them, so that `model_fingerprint`
(used by the dashboard's staleness check) stays cheap to import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from did_core.config import ModelSpec, ScoreSettings
from did_core.errors import InputError
from did_core.files import read_json
from did_core.fingerprints import PICKLE_SUFFIXES, looks_like_hub_id


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
    if looks_like_hub_id(path):
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
        raise _load_error(source, "model", e) from None


def _load_error(source: str, what: str, e: Exception) -> InputError:
    msg = str(e).splitlines()[0][:200] if str(e) else ""
    if "trust_remote_code" in str(e):  # transformers says so past the first line, which msg keeps
        msg += " (pass --trust-remote-code only if you trust this code)"
    return InputError(f"{source}: cannot load the {what} ({type(e).__name__}: {msg})")


def _check_config(directory: Path, settings: ScoreSettings) -> None:
    """The model's config loads as `load_model` would load it: a model that needs remote code is
    refused here, before a job starts, unless `trust_remote_code` is set."""
    from transformers import AutoConfig

    read_json(directory / "config.json")  # a clear error for a corrupt config before transformers sees it
    try:
        AutoConfig.from_pretrained(str(directory), trust_remote_code=settings.trust_remote_code,
                                   local_files_only=True)
    except Exception as e:
        raise _load_error(str(directory), "model", e) from None


def _hf_tokenizer(directory: Path, settings: ScoreSettings):
    # TRL checkpoints carry the tokenizer; a bare checkpoint falls back to its run folder's.
    tok_dir = directory if _has_tokenizer(directory) or not _has_tokenizer(directory.parent) else directory.parent
    return _load_tokenizer(str(tok_dir), settings, local_files_only=True)


def _load_hf_dir(directory: Path, settings: ScoreSettings):
    read_json(directory / "config.json")  # a clear error for a corrupt config before transformers sees it
    use_safetensors = _check_weights(directory, settings)
    model = _from_pretrained(str(directory), settings, use_safetensors=use_safetensors, local_files_only=True)
    return model, _hf_tokenizer(directory, settings)


def _peft_base(directory: Path) -> str:
    cfg = read_json(directory / "adapter_config.json")
    base = cfg.get("base_model_name_or_path")
    if not base or not isinstance(base, str):
        raise InputError(f"{directory / 'adapter_config.json'}: no base_model_name_or_path")
    if not Path(base).exists() and (directory / base).exists():
        base = str(directory / base)
    return base


def _load_peft(directory: Path, settings: ScoreSettings):
    base = _peft_base(directory)
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
    return model, _gguf_tokenizer(path, settings)


def _gguf_tokenizer(path: Path, settings: ScoreSettings):
    return _load_tokenizer(str(path.parent), settings, gguf_file=path.name, local_files_only=True)


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


def load_tokenizer(spec: ModelSpec, settings: ScoreSettings) -> Any:
    """The tokenizer `load_model(spec, …)` would return, without loading the weights (a job checks
    every checkpoint's tokenizer before it loads any model)."""
    kind = _model_kind(spec.path)
    p = Path(spec.path).expanduser()
    if kind == "hf":
        _check_config(p, settings)
        _check_weights(p, settings)
        return _hf_tokenizer(p, settings)
    if kind == "peft":
        _check_weights(p, settings, adapter=True)
        if _has_tokenizer(p):
            return _load_tokenizer(str(p), settings, local_files_only=True)
        return load_tokenizer(ModelSpec(name=spec.name, path=_peft_base(p), role=spec.role), settings)
    if kind == "gguf":
        return _gguf_tokenizer(p, settings)
    return _load_tokenizer(spec.path, settings, local_files_only=_offline())
