"""Normalize raw preference records (one dict per row) to prompt / chosen / rejected (docs/REFERENCE.md §10).

The input is what a file reader produced: a list of plain-Python dicts. The output is a list of
normalized rows. Everything here is pure (no I/O); every bad value raises `InputError` naming the
row (0-based, like `pair_id`) and the column.

Prompt rules, in order:
- an explicit `prompt` of the same kind as the responses (both text or both message lists): kept;
- a text `prompt` with message-list responses (UltraFeedback-binarized, whose responses repeat the
  user turn): the prompt column is ignored and the prompt is extracted from the responses, as
  TRL's `maybe_extract_prompt` does;
- no `prompt`, text responses that start with "\\n\\nHuman:" (Anthropic HH-RLHF): the prompt is the
  longest common prefix of chosen and rejected that ends with "\\n\\nAssistant:" (see `split_hh`);
- no `prompt` otherwise: TRL's `extract_prompt` (shared leading characters or messages).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from did_core.errors import InputError

HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
RESPONSE_COLUMNS = ("chosen", "rejected")


def extract_prompt(chosen: Sequence, rejected: Sequence) -> tuple[Sequence, Sequence, Sequence]:
    """TRL 1.16's `trl.data_utils.extract_prompt`, character for character (strings or message lists).

    Returns `(prompt, chosen_rest, rejected_rest)`. Quirks kept on purpose so results equal TRL's: a
    space just before the first difference goes to the completions; when one response is a prefix of
    the other (no difference found) the prompt stops one element short of the shorter one. Callers
    reject an empty prompt (TRL would index `chosen[-1]` there and return nonsense).
    """
    n = min(len(chosen), len(rejected))
    if n == 0:
        return chosen[:0], chosen, rejected
    idx = 0
    for idx in range(n):  # idx outlives the loop, exactly as in TRL
        if chosen[idx] != rejected[idx]:
            if idx > 0 and chosen[idx - 1] == " ":  # TRL: remove space before the prompt
                idx -= 1
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """Split an HH-RLHF pair into `(prompt, chosen_completion, rejected_completion)`.

    The prompt is the longest common prefix of both transcripts that ends with "\\n\\nAssistant:"
    (normally: everything up to and including the last "\\n\\nAssistant:"); the completions keep their
    leading space. This equals TRL's `extract_prompt` whenever the two final answers differ at their
    first character (TRL moves the space into the completion too), and unlike it never cuts a shared
    first word out of the answers. Returns None when no such prefix exists.
    """
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, n)
    if cut < 0 or cut + len(HH_ASSISTANT) > n:
        return None
    end = cut + len(HH_ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def _where(source: str, row: int, column: str | None = None, lines: Sequence[int] | None = None) -> str:
    """`file: row 3 (line 4), column 'chosen'` — the location part of an error message."""
    text = f"{source}: row {row}"
    if lines is not None and row < len(lines):
        text += f" (line {lines[row]})"
    if column is not None:
        text += f", column {column!r}"
    return text


def _describe(value: Any) -> str:
    if value is None:
        return "null (a missing value)"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return type(value).__name__


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    """Validate a message list and return it as plain dicts (keys whose value is None dropped)."""
    if not isinstance(value, list):
        raise InputError(f"{where}: expected a list of messages, got {_describe(value)}")
    out = []
    for j, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise InputError(f"{where}, message {j}: expected a {{'role', 'content'}} object, got {_describe(msg)}")
        msg = {k: v for k, v in msg.items() if v is not None}
        role = msg.get("role")
        if role not in ROLES:
            raise InputError(f"{where}, message {j}: role {role!r} is not one of {', '.join(sorted(ROLES))}")
        if not isinstance(msg.get("content"), str):
            raise InputError(f"{where}, message {j}: 'content' must be a string, got {_describe(msg.get('content'))}")
        out.append(msg)
    return out


def _value(value: Any, conversational: bool, where: str) -> str | list[dict[str, Any]]:
    """Check one prompt/response cell against the dataset's kind (text or message list)."""
    if conversational:
        return _messages(value, where)
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a string, got {_describe(value)}")
    return value


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and isinstance(value[0], dict) and "role" in value[0]


def normalize_rows(records: list[dict[str, Any]], source: str, lines: Sequence[int] | None = None
                   ) -> tuple[list[dict[str, Any]], bool]:
    """Normalize already-renamed records to rows with prompt, chosen, rejected (+ untouched extras).

    `lines` optionally gives each row's 1-based line in the file, for messages. Returns
    `(rows, conversational)`. Raises InputError on the first bad row.
    """
    first = records[0]
    conversational = _is_messages(first.get("chosen"))
    if not conversational and not isinstance(first.get("chosen"), str):
        raise InputError(f"{_where(source, 0, 'chosen', lines)}: expected a string or a list of "
                         f"{{'role', 'content'}} messages, got {_describe(first.get('chosen'))}")
    has_prompt = any("prompt" in r for r in records)
    hh = not has_prompt and not conversational and first["chosen"].startswith(HH_HUMAN)
    rows = []
    for i, rec in enumerate(records):
        resp = {c: _value(rec.get(c), conversational, _where(source, i, c, lines)) for c in RESPONSE_COLUMNS}
        prompt_value = rec.get("prompt")
        explicit = has_prompt and isinstance(prompt_value, list if conversational else str)
        if has_prompt and not explicit and not (conversational and isinstance(prompt_value, str)):
            kind = "a list of messages or a string" if conversational else "a string, as the responses are"
            raise InputError(f"{_where(source, i, 'prompt', lines)}: expected {kind}, got {_describe(prompt_value)}")
        if explicit:
            prompt = _value(prompt_value, conversational, _where(source, i, "prompt", lines))
            chosen, rejected = resp["chosen"], resp["rejected"]
        elif hh:
            split = split_hh(resp["chosen"], resp["rejected"])
            if split is None:
                raise InputError(f"{_where(source, i, None, lines)}: HH-RLHF transcripts of chosen and rejected "
                                 f"share no prefix ending with {HH_ASSISTANT!r}, so the prompt cannot be found")
            prompt, chosen, rejected = split
        else:
            prompt, chosen, rejected = extract_prompt(resp["chosen"], resp["rejected"])
            if len(prompt) == 0:
                raise InputError(f"{_where(source, i, None, lines)}: no 'prompt' column and chosen and rejected "
                                 "share no leading text, so there is no implicit prompt; add a 'prompt' column "
                                 "or map one with a column mapping")
        if len(prompt) == 0:
            raise InputError(f"{_where(source, i, 'prompt', lines)}: empty prompt (the first response token "
                             "would have nothing to be predicted from)")
        for column, completion in (("chosen", chosen), ("rejected", rejected)):
            if len(completion) == 0:
                what = "empty response" if explicit else "empty response once the shared prompt is removed"
                raise InputError(f"{_where(source, i, column, lines)}: {what}")
        extras = {k: v for k, v in rec.items() if k not in ("prompt", "chosen", "rejected")}
        rows.append({**extras, "prompt": prompt, "chosen": list(chosen) if conversational else chosen,
                     "rejected": list(rejected) if conversational else rejected})
    return rows, conversational
