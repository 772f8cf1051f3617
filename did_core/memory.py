"""How much memory a scoring job needs, checked before any model is loaded.

A job holds at most two models at once: the reference and one policy (`chunked.run_chunks` scores
checkpoint by checkpoint). What it needs is therefore the reference's weights, the largest policy's,
a working margin for one forward batch, and, when token-level DID entropy is on, a cache of the
reference's head inputs (one (tokens, hidden) float matrix per batch) so that the reference's body
runs once per chunk and not once per checkpoint. The cache takes what the budget leaves; chunks whose
cache does not fit are scored in blocks, and each policy is loaded once per block.

Sizes come from the weight files' headers (safetensors, GGUF), never from loading them: a model that
cannot fit is refused with one sentence before anything is loaded. The budget is `--max-memory` or,
by default, 90% of what the device has free (CUDA: `mem_get_info`; CPU: MemAvailable, capped by the
cgroup's limit), divided between the ranks of one machine under torchrun.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from did_core.errors import InputError
from did_core.files import read_json

GIB = 1 << 30
WORKING_BYTES = 512 << 20
"""Margin for one forward batch (activations, the head's (rows, V) chunks, the tree mask) and the
process's own tensors: measured peaks above the weights stay below it at the default token budgets."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'24GB', '1.5GiB', '800MB', '1000000' → bytes (k/M/G/T are powers of 1024, as memory is counted)."""
    m = _SIZE.match(str(text))
    if not m:
        raise InputError(f"--max-memory: cannot read {text!r} (give e.g. 16GB or 800MB)")
    if not m.group(2) and float(m.group(1)) < 1024:
        raise InputError(f"--max-memory {text}: give a unit (e.g. {text}GB); a bare number is bytes")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(unit or " "))


def human(n: float) -> str:
    if n >= GIB / 4:
        return f"{n / GIB:.2f} GiB"
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


# -- model sizes from file headers -----------------------------------------------------------------------
def _safetensors_elements(path: Path) -> int:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for name, t in header.items():
        if name != "__metadata__":
            count = 1
            for d in t["shape"]:
                count *= int(d)
            total += count
    return total


def _gguf_elements(path: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors)


def parameter_count(path: str) -> int | None:
    """Parameters of the model at `path` from its weight files' headers (a PEFT adapter: its base's
    plus its own), or None when the files do not say (a hub id, pickled weights)."""
    p = Path(path).expanduser()
    try:
        if p.is_file() and p.suffix.lower() == ".gguf":
            return _gguf_elements(p)
        if not p.is_dir():
            return None
        if (p / "adapter_config.json").is_file():
            base = read_json(p / "adapter_config.json").get("base_model_name_or_path")
            base = str(p / base) if base and not Path(base).exists() and (p / base).exists() else base
            return parameter_count(base) if isinstance(base, str) else None  # merged: the base's size
        files = [f for f in p.glob("*.safetensors") if not f.name.startswith("adapter_model")]
        return sum(_safetensors_elements(f) for f in files) if files else None
    except (OSError, ValueError, KeyError, struct.error, InputError):
        return None


def hidden_size(path: str) -> int | None:
    """The width of the last hidden state (the head's input), from config.json."""
    p = Path(path).expanduser()
    if (p / "adapter_config.json").is_file():
        base = read_json(p / "adapter_config.json").get("base_model_name_or_path")
        return hidden_size(str(p / base) if base and (p / base).exists() else base) if base else None
    if not (p / "config.json").is_file():
        return None
    cfg = read_json(p / "config.json")
    cfg = cfg.get("text_config", cfg) if "hidden_size" not in cfg else cfg
    for key in ("hidden_size", "n_embd", "d_model"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


# -- what the device has ---------------------------------------------------------------------------------
def _cgroup_free() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None


def available_bytes(device_type: str) -> int:
    """Free memory on the device the job scores on, now."""
    if device_type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        import psutil

        free = int(psutil.virtual_memory().available)
    cg = _cgroup_free()
    return min(free, cg) if cg is not None else free


def local_world() -> int:
    """Processes of this job on this machine (torchrun's LOCAL_WORLD_SIZE), which share its memory."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


# -- the plan ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    """What one process of a job may use, and how it is shared out."""

    budget: int
    """Bytes this process may use (given, or 90% of free memory / local ranks)."""
    given: bool
    """The budget came from --max-memory (else it was measured)."""
    reference: int | None
    largest_policy: int | None
    cache: int
    """Bytes left for the reference's cached head inputs (0: the reference is recomputed per policy)."""

    def describe(self) -> str:
        models = " + ".join(human(b) for b in (self.reference, self.largest_policy) if b is not None)
        return (f"memory budget {human(self.budget)} ({'--max-memory' if self.given else '90% of free memory'}): "
                f"{models or 'model sizes unknown'} for two models at a time, up to {human(self.cache)} to cache the "
                "reference between checkpoints")


def plan_memory(reference: str, policies: list[str], dtype: str, device_type: str,
                max_memory: int | None = None) -> MemoryPlan:
    """Check that the reference and the largest policy fit at once; InputError before loading when not."""
    width = DTYPE_BYTES.get(dtype, 4)
    given = max_memory is not None
    if max_memory is not None:
        budget = max_memory
    else:
        budget = int(0.9 * available_bytes(device_type)) // local_world()
    ref_n = parameter_count(reference)
    pol_ns = [n for n in (parameter_count(p) for p in policies) if n is not None]
    ref_b = ref_n * width if ref_n is not None else None
    pol_b = max(pol_ns) * width if pol_ns else None
    need = (ref_b or 0) + (pol_b or 0) + WORKING_BYTES
    if need > budget:
        where = "--max-memory" if given else f"free on {device_type}" + (
            f", shared by {local_world()} ranks" if local_world() > 1 else "")
        raise InputError(f"not enough memory: the reference ({human(ref_b or 0)}) and the largest checkpoint "
                         f"({human(pol_b or 0)}) in {dtype}, plus {human(WORKING_BYTES)} to work in, need "
                         f"{human(need)}; {human(budget)} is {where}")
    return MemoryPlan(budget=budget, given=given, reference=ref_b, largest_policy=pol_b, cache=budget - need)
