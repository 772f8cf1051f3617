"""Frozen, validated settings of the scoring engine: how we compute (device, dtype, batch size, safety).

What the trainer did (β, max length, loss, precision) is `run_settings.RunSettings`, resolved from
the run folder; this dataclass holds only what is ours to choose.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Progress = Callable[[str, int, int], None]
"""`progress(stage, done, total)`: how every long job (score, sample, demo) reports, in the units
its stage counts (pair passes while scoring)."""

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Device = Literal["auto", "cpu", "cuda"]
Role = Literal["reference", "policy"]


@dataclass(frozen=True)
class ScoreSettings:
    """How a dataset is scored. Fields that change a score enter the fingerprint."""

    dtype: Dtype = "auto"
    """Weights and compute dtype of the exact numerics; `auto` is float32 (bfloat16 moved per-sequence
    log-probs by up to several nats on a 135M model: docs/ARCHITECTURE.md, "Numerics")."""
    device: Device = "auto"
    """`auto` picks cuda when available, else cpu."""
    token_level: bool = True
    """Compute per-token DID entropy (estimator 1) for every policy."""
    token_budget: int | None = None
    """Padded tokens per forward batch; halved automatically on out-of-memory. None: 512 on CPU (larger
    batches were slower there: bench/score_bench.py), 16384 on CUDA."""
    limit: int | None = None
    """Score only the first N pairs of the dataset."""
    allow_pickle: bool = False
    """Allow loading pickled `.bin` weights (unsafe: arbitrary code)."""
    trust_remote_code: bool = False
    """Pass `trust_remote_code=True` to transformers (unsafe)."""
    max_memory: int | None = None
    """Bytes the job may hold (reference + one policy + working memory + the reference's cache);
    None: 90% of the device's free memory (`memory.plan_memory`)."""

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto|cpu|cuda, got {self.device!r}")
        if self.token_budget is not None and self.token_budget < 16:
            raise ValueError(f"token_budget must be >= 16, got {self.token_budget}")
        if self.max_memory is not None and self.max_memory < 1:
            raise ValueError(f"max_memory must be >= 1 byte, got {self.max_memory}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    def budget_for(self, device_type: str) -> int:
        """The token budget to use on a device of this type ("cpu" or "cuda")."""
        if self.token_budget is not None:
            return self.token_budget
        return 512 if device_type == "cpu" else 16384

    @property
    def resolved_dtype(self) -> str:
        return "float32" if self.dtype == "auto" else self.dtype

    def fingerprint_fields(self) -> dict:
        """The engine settings that change stored exact numbers (device and batch size do not)."""
        return {"token_level": self.token_level, "dtype": self.resolved_dtype}


@dataclass(frozen=True)
class ModelSpec:
    """One model to score: the reference or a policy (checkpoint)."""

    name: str
    """Display name: the path as given, or `checkpoint-N` within a run."""
    path: str
    """Local directory, hub id, PEFT adapter directory, or `.gguf` file."""
    role: Role = "policy"
    step: int | None = None
    """Training step, when known (from `checkpoint-N` or trainer_state.json)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ModelSpec.name must not be empty")
        if not self.path:
            raise ValueError("ModelSpec.path must not be empty")
        if self.role not in ("reference", "policy"):
            raise ValueError(f"role must be reference|policy, got {self.role!r}")


def default_workspace() -> Path:
    """The results folder when none is given: `$DID_WORKSPACE` when set (and not empty), else
    `./workspace` — for the CLI, the dashboard and `Workspace()` alike."""
    return Path(os.environ.get("DID_WORKSPACE") or "workspace")
