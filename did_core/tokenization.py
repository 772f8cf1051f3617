"""Tokenize normalized pairs exactly as TRL 1.16's `DPOTrainer` does, then truncate as its collator does.

TRL (`DPOTrainer._prepare_dataset` and `DataCollatorForPreference`), per pair:
1. text formats: append `tokenizer.eos_token` to each completion unless it already ends with it;
2. tokenize prompt, prompt+chosen and prompt+rejected — text with `tokenizer(text)` (special
   tokens added as the tokenizer does by default), message lists with `apply_chat_template`
   (the prompt alone with `add_generation_prompt=True`);
3. the completion starts where the tokenized prompt and each tokenized prompt+completion diverge,
   the minimum over chosen and rejected (`common_prefix_length`): a prompt token that merges with
   the completion's first one (BPE) or a template that renders the prompt alone differently moves
   the boundary left;
4. collator, `truncation_mode="keep_start"`: each sequence `(prompt_ids + completion_ids)[:max_length]`.
TRL then drops pairs whose prompt alone fills `max_length`; we keep them with empty completions and
count them (`truncation_report`), so nothing disappears silently.

Batched tokenizer calls give the same ids as TRL's one-example calls (the chat template is rendered
per conversation either way); the tests check this against TRL itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from did_core.data import PreferenceData
from did_core.errors import InputError

BATCH = 256  # examples per tokenizer call: bounds memory, keeps the Rust tokenizer busy


@dataclass(frozen=True)
class TokenizedPair:
    """One pair as token ids, after TRL's tokenization and keep_start truncation."""

    pair_id: str
    prompt_ids: tuple[int, ...]
    """TRL's prompt_ids (up to the divergence point), cut to max_length."""
    chosen_ids: tuple[int, ...]
    """Completion tokens actually scored (EOS included for text formats)."""
    rejected_ids: tuple[int, ...]
    chosen_dropped: int
    """Completion tokens of chosen cut by max_length."""
    rejected_dropped: int


def common_prefix_length(ids: Sequence[int], other_ids: Sequence[int]) -> int:
    """Number of leading tokens the two sequences share (TRL's `common_prefix_length`)."""
    n = 0
    for a, b in zip(ids, other_ids):
        if a != b:
            break
        n += 1
    return n


def _encode_text(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), BATCH):
        out.extend(tokenizer(texts[i:i + BATCH])["input_ids"])
    return out


def _encode_chat(tokenizer: Any, conversations: list[list[dict[str, Any]]], *, add_generation_prompt: bool,
                 pair_ids: Sequence[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(conversations), BATCH):
        try:
            enc = tokenizer.apply_chat_template(conversations[i:i + BATCH], tokenize=True, return_dict=True,
                                                add_generation_prompt=add_generation_prompt, tools=None)
        except Exception:  # a template may raise (e.g. "roles must alternate"): find the pair, say so in one line
            for j, conversation in enumerate(conversations[i:i + BATCH], start=i):
                try:
                    tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, tools=None)
                except Exception as e:
                    first = str(e).splitlines()[0] if str(e) else ""
                    raise InputError(f"pair_id {pair_ids[j]}: the tokenizer's chat template fails on this "
                                     f"conversation ({type(e).__name__}: {first})") from None
            raise
        out.extend(enc["input_ids"])
    return out


def _keep_start(prompt: list[int], completion: list[int], max_length: int | None
                ) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """`(prompt + completion)[:max_length]` split back into (prompt, kept completion, dropped count)."""
    if max_length is None:
        return tuple(prompt), tuple(completion), 0
    room = max(0, max_length - len(prompt))
    return tuple(prompt[:max_length]), tuple(completion[:room]), max(0, len(completion) - room)


def encode_pairs(prompts: list, chosens: list, rejecteds: list, tokenizer: Any, *, conversational: bool,
                 pair_ids: Sequence[str] | None = None) -> list[tuple[list[int], list[int], list[int]]]:
    """TRL's `tokenize_fn` over many pairs: `(prompt_ids, chosen_ids, rejected_ids)` before truncation.

    `pair_ids` only name pairs in error messages (default: row indices).
    """
    ids = [str(i) for i in range(len(prompts))] if pair_ids is None else list(pair_ids)
    if conversational:
        if getattr(tokenizer, "chat_template", None) is None:
            raise InputError("the tokenizer has no chat template, which conversational (message list) data needs")
        prompt_ids = _encode_chat(tokenizer, prompts, add_generation_prompt=True, pair_ids=ids)
        chosen_full = _encode_chat(tokenizer, [p + c for p, c in zip(prompts, chosens)],
                                   add_generation_prompt=False, pair_ids=ids)
        rejected_full = _encode_chat(tokenizer, [p + r for p, r in zip(prompts, rejecteds)],
                                     add_generation_prompt=False, pair_ids=ids)
    else:
        eos = tokenizer.eos_token
        if not eos:
            raise InputError("the tokenizer has no EOS token, which TRL appends to every text completion")
        chosens = [c if c.endswith(eos) else c + eos for c in chosens]
        rejecteds = [r if r.endswith(eos) else r + eos for r in rejecteds]
        prompt_ids = _encode_text(tokenizer, prompts)
        chosen_full = _encode_text(tokenizer, [p + c for p, c in zip(prompts, chosens)])
        rejected_full = _encode_text(tokenizer, [p + r for p, r in zip(prompts, rejecteds)])
    out = []
    for p, pc, pr in zip(prompt_ids, chosen_full, rejected_full):
        n = min(common_prefix_length(p, pc), common_prefix_length(p, pr))
        out.append((list(p[:n]), list(pc[n:]), list(pr[n:])))
    return out


def tokenize_pairs(data: PreferenceData, tokenizer: Any, max_length: int | None) -> list[TokenizedPair]:
    """Token ids of every pair of `data`, as TRL 1.16 trains on them (see the module docstring).

    `max_length=None` disables truncation. Pairs whose prompt fills `max_length` are kept with
    empty completions (TRL drops them); `truncation_report` counts them.
    """
    if max_length is not None and max_length < 1:
        raise InputError(f"--max-length must be at least 1, got {max_length}")
    df = data.pairs
    pair_ids = [str(p) for p in df["pair_id"].tolist()]
    encoded = encode_pairs(df["prompt"].tolist(), df["chosen"].tolist(), df["rejected"].tolist(), tokenizer,
                           conversational=data.conversational, pair_ids=pair_ids)
    pairs = []
    for pair_id, (prompt, chosen, rejected) in zip(pair_ids, encoded):
        if not prompt:  # the engine needs a token before the first scored one
            raise InputError(f"pair_id {pair_id}: the prompt has no token of its own once tokenized (its text "
                             "merges into the response's first token), so nothing predicts the response; "
                             "end the prompt with a separator such as a space or newline")
        prompt_kept, chosen_kept, chosen_dropped = _keep_start(prompt, chosen, max_length)
        _, rejected_kept, rejected_dropped = _keep_start(prompt, rejected, max_length)
        pairs.append(TokenizedPair(pair_id=pair_id, prompt_ids=prompt_kept, chosen_ids=chosen_kept,
                                   rejected_ids=rejected_kept, chosen_dropped=chosen_dropped,
                                   rejected_dropped=rejected_dropped))
    return pairs


def truncation_report(pairs: Sequence[TokenizedPair]) -> dict[str, Any]:
    """What max_length cut, for the CLI to print (never silent).

    Keys: `n_pairs`; `truncated_responses` (responses that lost tokens); `truncated_pairs` (pairs
    with at least one); `fully_truncated_pairs` (the prompt fills max_length: both completions
    empty, nothing to score — TRL would drop these); `dropped_tokens` (completion tokens cut);
    `fully_truncated_ids` (their pair_ids, at most 20).
    """
    truncated_responses = sum((p.chosen_dropped > 0) + (p.rejected_dropped > 0) for p in pairs)
    truncated = [p for p in pairs if p.chosen_dropped or p.rejected_dropped]
    full = [p.pair_id for p in truncated if not p.chosen_ids and not p.rejected_ids]
    return {
        "n_pairs": len(pairs),
        "truncated_responses": truncated_responses,
        "truncated_pairs": len(truncated),
        "fully_truncated_pairs": len(full),
        "dropped_tokens": sum(p.chosen_dropped + p.rejected_dropped for p in pairs),
        "fully_truncated_ids": full[:20],
    }
