"""Fingerprints: short hashes that say when two stored results were computed from the same things.

`fingerprint` hashes canonical JSON; `model_fingerprint` a model's weights and config (quick mode by
default: both ends of every weight file, size and mtime); `tokenizer_fingerprint` what decides token
ids. The score store keys every result on them, and the dashboard checks staleness with them, so this
module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from did_core.errors import InputError
from did_core.files import read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weight files that are pickles (loading them runs code: models.py refuses them without allow_pickle)."""
_FINGERPRINT_SUFFIXES = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
_FINGERPRINT_JSON = ("config.json", "generation_config.json", "adapter_config.json")
_EDGE = 1 << 20  # bytes hashed at each end of a weight file in quick mode


def fingerprint(*parts: Any) -> str:
    """A 20-hex-digit sha256 of the canonical JSON of `parts` (dict keys sorted, no whitespace)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def looks_like_hub_id(path: str) -> bool:
    """Whether `path` reads as a Hugging Face hub id (`org/name` or `name`), not a local path or a .gguf."""
    return (not os.path.isabs(path) and not path.startswith((".", "~")) and not path.endswith(".gguf")
            and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) is not None)


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
        if not looks_like_hub_id(path):
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
        base = read_json(p / "adapter_config.json").get("base_model_name_or_path")
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
