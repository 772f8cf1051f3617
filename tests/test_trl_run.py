"""TRL output folders: checkpoints by step, the trainer's arguments read without running code, errors."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from did_core.errors import InputError
from did_core.trl_run import discover_run, read_training_args


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


def _fake_checkpoint(d: Path, step: int, history: list[dict]) -> None:
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\0" * 8)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    torch.save(FakeDPOConfig(0.3, 1e-6, str(d.parent), ["sigmoid"]), d / "training_args.bin")

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
