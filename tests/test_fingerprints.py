"""Fingerprints: canonical JSON hashes, model fingerprints (quick and content), tokenizer identity."""

from __future__ import annotations

import shutil

import pytest

from did_core.errors import InputError
from did_core.fingerprints import check_same_tokenizer, fingerprint, model_fingerprint, tokenizer_fingerprint
from did_core.tiny import build_tokenizer


def test_fingerprint_is_canonical():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint("x", 1) != fingerprint("x", 2)
    assert len(fingerprint("x")) == 20


def test_tokenizer_mismatch_is_refused(tokenizer):
    same = build_tokenizer(merges=[("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")])
    check_same_tokenizer(tokenizer, same, "checkpoint-1")
    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(same)
    with pytest.raises(InputError, match=r"checkpoint-2.*vocabulary"):
        check_same_tokenizer(tokenizer, build_tokenizer(), "checkpoint-2")
    other_template = build_tokenizer(merges=[("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")], chat_template="x")
    with pytest.raises(InputError, match="chat template"):
        check_same_tokenizer(tokenizer, other_template, "checkpoint-3")


def test_model_fingerprint(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(bytes(range(256)) * 10_000)  # 2.5 MB: ends hashed, middle skipped
    (d / "README.md").write_text("ignored")
    fp = model_fingerprint(str(d))
    assert fp == model_fingerprint(str(d))
    (d / "README.md").write_text("still ignored")
    assert model_fingerprint(str(d)) == fp
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)  # copy2 keeps mtimes
    assert model_fingerprint(str(copy)) == fp
    assert model_fingerprint(str(copy), content=True) == model_fingerprint(str(d), content=True)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (d / "model.safetensors").write_bytes(bytes(data))
    assert model_fingerprint(str(d)) != fp
    with pytest.raises(InputError):
        model_fingerprint(str(tmp_path / "missing"))
