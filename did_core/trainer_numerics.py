"""The `trainer` numerics: each model's forward exactly as TRL 1.16's `DPOTrainer` ran it at evaluation.

The exact numerics (`engine.py`) run float32 and sum in float64, so they are the true log-probs of
the weights. A trainer that ran with bf16 or fp16 autocast logged other numbers — off by 0.1–1 nats
per sequence on a 135M model, the size of the reward signal early in training. To reproduce what the
trainer logged, this module runs the forward the trainer's way:

- batches of `eval_batch_size` pairs in dataset order (TRL's sequential eval sampler), after TRL's
  filter (with `keep_start`, pairs whose prompt alone fills `max_length` are dropped before batching),
  collated by TRL's own `DataCollatorForPreference`: rows `[chosen_0 … chosen_B-1, rejected_0 …]`,
  right-padded to the longest row (and to `pad_to_multiple_of`);
- the model's forward under `torch.autocast(device, dtype)` as accelerate wraps it for mixed precision,
  with TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`, float32 online log-sum-exp over bf16
  logit tiles);
- per-sequence log-probs summed in float32 over the padded row, as `_compute_loss` does.

Padding and batch composition change bf16 rounding, which is why batches are the trainer's and not the
engine's length-sorted ones. Bit-equality with a logged metric also needs the same kernels: a run trained
on a GPU and scored on a CPU gets rounding of the same size, not the same rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from did_core.engine import PairLike, PairScores, ResponseScores

AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def kept_by_trainer(pairs: Sequence[PairLike], max_length: int | None, truncation_mode: str) -> list[int]:
    """Indices of the pairs TRL keeps: with `keep_start` it drops pairs whose prompt fills max_length
    (`DPOTrainer._prepare_dataset`); `keep_end` drops none."""
    if max_length is None or truncation_mode != "keep_start":
        return list(range(len(pairs)))
    return [i for i, p in enumerate(pairs) if len(p.prompt_ids) < max_length]


def trainer_batches(pairs: Sequence[PairLike], batch_size: int, max_length: int | None,
                    truncation_mode: str = "keep_start") -> list[list[int]]:
    """The trainer's eval batches as lists of pair indices: consecutive runs of `batch_size` kept pairs.

    Naive equivalent: `kept = [i for i … if kept]; [kept[k:k + batch_size] for k in range(0, len(kept), batch_size)]`.
    """
    kept = kept_by_trainer(pairs, max_length, truncation_mode)
    return [kept[k:k + batch_size] for k in range(0, len(kept), batch_size)]


def precision_supported(device: torch.device, precision: str) -> tuple[bool, str]:
    """Whether autocast in `precision` runs on `device`, and a sentence saying so when it does not."""
    dtype = AUTOCAST_DTYPE[precision]
    if dtype is None:
        return True, ""
    if device.type == "cuda":
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False, f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16 support"
        return True, ""
    try:
        with torch.autocast(device.type, dtype=dtype):
            torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    except (RuntimeError, AssertionError) as exc:
        return False, f"{precision} autocast is not available on {device.type} ({str(exc).splitlines()[0][:120]})"
    return True, ""


def _fused(model: nn.Module) -> None:
    """Give `model` TRL's fused LM head once; the model's plain forward is unchanged (`fused_lm_head=False`)."""
    if getattr(model, "_did_fused_lm_head", False):
        return
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model)
    model._did_fused_lm_head = True


def adopt_fused_head(model: nn.Module) -> None:
    """Give `model` TRL's fused head unless a trainer already did (TRL's DPOTrainer patches its policy
    and reference: their `forward` then takes `fused_lm_head`), never twice: patching again would drop
    the extra outputs (entropy, …) the trainer asked its head for. Under mixed precision accelerate has
    wrapped that forward in autocast and kept it as `_original_forward`."""
    forward = vars(model).get("_original_forward", model.forward)
    # TRL's patch wraps the model's forward with functools.wraps: its own signature, not the wrapped one
    if "fused_lm_head" in inspect.signature(forward, follow_wrapped=False).parameters:
        model._did_fused_lm_head = True
    _fused(model)


def _forward_batch(model: nn.Module, batch: dict[str, torch.Tensor], dtype: torch.dtype | None,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token log-probs (2B, L−1) float32, per-sequence sums (2B,) float32), as `_compute_loss`."""
    ids = batch["input_ids"].to(device)
    completion_mask = batch["completion_mask"].to(device)
    labels = ids.masked_fill(completion_mask == 0, -100)
    ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    with ctx:
        out = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device), use_cache=False, labels=labels,
                    fused_lm_head=True)
    seq_len = completion_mask.shape[1] - 1
    per_token = out.log_probs[:, -seq_len:].float()  # (2B, L-1)
    return per_token, per_token.sum(dim=1)  # float32 sum over the padded row, as TRL


def score_trainer_batches(models: Sequence[nn.Module], pairs: Sequence[PairLike], batches: Sequence[Sequence[int]],
                          *, precision: str, max_length: int | None, truncation_mode: str,
                          pad_to_multiple_of: int | None, pad_token_id: int, device: torch.device,
                          ) -> list[dict[int, PairScores]]:
    """Score the given trainer batches under every model; one {pair index: PairScores} per model.

    `did_entropy` is None (the DID is an exact-numerics quantity). Pair indices outside `batches` are
    not scored. Models are put in eval mode; TRL's fused head is added to each once.
    """
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    collator = DataCollatorForPreference(pad_token_id=pad_token_id, max_length=max_length,
                                         truncation_mode=truncation_mode, pad_to_multiple_of=pad_to_multiple_of)
    dtype = AUTOCAST_DTYPE[precision]
    out: list[dict[int, PairScores]] = [{} for _ in models]
    for m in models:
        _fused(m)
        m.eval()
    with torch.inference_mode():
        for idx in batches:
            examples = [{"prompt_ids": list(pairs[i].prompt_ids), "chosen_ids": list(pairs[i].chosen_ids),
                         "rejected_ids": list(pairs[i].rejected_ids)} for i in idx]
            batch = collator(examples)
            mask = batch["completion_mask"][:, 1:].bool()  # (2B, L-1): which label positions are scored
            for k, m in enumerate(models):
                per_token, sums = _forward_batch(m, batch, dtype, device)
                per_token, sums = per_token.cpu(), sums.cpu()
                b = len(idx)
                for j, i in enumerate(idx):
                    sides = []
                    for row in (j, b + j):
                        tok = per_token[row][mask[row]].numpy().astype(np.float32)
                        sides.append(ResponseScores(tok, None, float(sums[row])))
                    out[k][i] = PairScores(*sides)
    return out



def logged_means(per_pair: Any, batch_size: int, columns: Sequence[str]) -> dict[str, float]:
    """Means over pairs as TRL logs them: each metric's batch means, averaged over batches (unweighted:
    a short last batch counts as much as a full one). Equal to the plain mean when every batch is full.

    per_pair: a DataFrame in the trainer's batch order (kept pairs only). Naive equivalent:
    `mean([mean(col[k:k+b]) for k in range(0, n, b)])`.
    """
    n = len(per_pair)
    out = {}
    for c in columns:
        values = np.asarray(per_pair[c], dtype=np.float64)
        out[c] = float(np.mean([values[k:k + batch_size].mean() for k in range(0, n, batch_size)])) if n else np.nan
    return out
