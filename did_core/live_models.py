"""The trainer's models as the scoring engine sees them, for `callback.DIDCallback`.

The callback scores the very modules the trainer trains — no copy, no cast, no move — so this module
supplies what that needs: the reference (the trainer's `ref_model`, or a PEFT policy's base with its
adapters off: `AdaptersOff`), a fingerprint for weights that exist only in memory, and the two
contexts every scoring runs in: `untouched` (train/eval flags and RNG states put back) and
`plain_forward` (the model's own forward, not accelerate's mixed-precision wrapper).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from did_core.errors import InputError
from did_core.fingerprints import model_fingerprint


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


@contextlib.contextmanager
def reference_adapter(peft_model) -> Iterator[None]:
    """The PEFT model as TRL's reference: its "ref" adapter when it has one, else all adapters off."""
    from trl.trainer.utils import use_adapter

    with use_adapter(peft_model, adapter_name="ref" if "ref" in peft_model.peft_config else None):
        yield


class AdaptersOff(nn.Module):
    """A PEFT policy's base model with its adapters off, as a model the engine can score.

    Every forward (of the model, or of its `base_model` body) runs inside `reference_adapter`; the
    output head is the policy's (the engine applies it outside the forward only when it is a plain
    `nn.Linear`, which adapters do not touch). Nothing is copied: the modules are the policy's.
    """

    def __init__(self, peft_model, module: nn.Module | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "_peft", peft_model)  # not registered: .modules() stays this proxy alone
        object.__setattr__(self, "_module", module if module is not None else peft_model.get_base_model())
        self.config = self._module.config
        self._did_fused_lm_head = True  # its forward is the policy's, which `_Session` gives TRL's fused head

    def forward(self, *args, **kwargs):
        with reference_adapter(self._peft):
            return self._module(*args, **kwargs)

    @property
    def base_model(self) -> AdaptersOff:
        return AdaptersOff(self._peft, self._module.base_model)

    def get_output_embeddings(self):
        return self._module.get_output_embeddings()

    def parameters(self, recurse: bool = True):
        return self._module.parameters(recurse)

    def train(self, mode: bool = True) -> AdaptersOff:
        self._module.train(mode)
        self.training = mode
        return self


@contextlib.contextmanager
def untouched(*modules: nn.Module) -> Iterator[None]:
    """Run a block that leaves no trace on training: every submodule's train/eval flag and the torch,
    CUDA, NumPy and Python RNG states are put back afterwards (scoring draws no random numbers in
    eval mode, but a model with a stochastic layer would)."""
    flags = [(m, m.training) for mod in modules for m in mod.modules()]
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def plain_forward(*modules: nn.Module) -> Iterator[None]:
    """accelerate wraps a mixed-precision model's forward in autocast (bf16 by default in TRL, even on
    CPU), keeping the original as `_original_forward`; inside this block each module runs its original
    forward, so the exact numerics stay float32 and the trainer numerics apply their own autocast."""
    swapped = [(m, vars(m)["forward"]) for m in modules if "_original_forward" in vars(m) and "forward" in vars(m)]
    for m, _ in swapped:
        m.forward = m._original_forward
    try:
        yield
    finally:
        for m, wrapped in swapped:
            m.forward = wrapped


def weights_fingerprint(model: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """A hash of a model's parameters and buffers (names, dtypes, shapes, bytes), leaving out names
    that contain any of `skip`: identifies weights that exist only in memory."""
    h = hashlib.sha256(b"did-weights-v1\n")
    for name, t in sorted(model.state_dict().items()):
        if any(s in name for s in skip):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return WEIGHTS_PREFIX + h.hexdigest()[:20]


WEIGHTS_PREFIX = "w"
"""`weights_fingerprint`s start with it (files fingerprints are 20 hex digits): the stale check
(`Workspace.stale_models`) compares files only, so a weights hash is not recorded as one."""


def _files_or_weights(path: str | None, model: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """`fingerprints.model_fingerprint` of the folder the model was loaded from (as `score` computes it, so a
    stored reference score is shared), else a hash of the weights in memory (quantized: always)."""
    if path and Path(path).is_dir() and not getattr(model, "is_quantized", False):
        with contextlib.suppress(InputError):
            return model_fingerprint(path)
    return weights_fingerprint(model, skip)


def resolve_reference(trainer, policy: nn.Module, global_step: int) -> tuple[nn.Module | None, str | None, str, str]:
    """(the reference module, its model fingerprint, its name, its path) for this trainer.

    The module is None when there is none to run: full fine-tuning with `precompute_ref_log_probs` and
    no `ref_model` once training has moved the policy (the stored reference score is then used); the
    fingerprint is None when it cannot be known (the stored run's reference is then used).
    """
    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        ref = trainer.accelerator.unwrap_model(ref)
        path = str(getattr(ref.config, "_name_or_path", "") or "")
        return ref, _files_or_weights(path, ref), path or "reference", path
    if is_peft(policy):
        active = policy.active_adapter if isinstance(policy.active_adapter, str) else policy.active_adapter[0]
        base = policy.peft_config[active].base_model_name_or_path
        adapters = tuple(f".{a}." for a in policy.peft_config if a != "ref")
        with reference_adapter(policy):
            fp = _files_or_weights(base, policy.get_base_model(), skip=adapters)
        return AdaptersOff(policy), fp, f"{base or 'base model'} (adapters off)", str(base or "")
    path = str(getattr(policy.config, "_name_or_path", "") or "")
    if global_step == 0:  # precomputed reference: the policy itself, before its first step
        return policy, _files_or_weights(path, policy), path or "initial policy", path
    fp = model_fingerprint(path) if path and Path(path).is_dir() else None
    return None, fp, path or "initial policy", path
