"""The tokenization audit of a run: what TRL's tokenization did to the pairs that a user would not see.

From the tokenized pairs (`tokenization.tokenize_pairs`) and the tokenizer, per problem, how many pairs
have it and which:

* `prompt_ends_with_eos`: the prompt's last token is EOS (the text already ended with it: the model
  is asked to respond after an end of sequence);
* `eos_in_prompt`: an EOS before the prompt's last token (text formats only: in a chat template an
  end-of-turn token inside the prompt is the template's doing, Qwen's `<|im_end|>` is its EOS);
* `tokens_after_eos`: completion tokens after the completion's first EOS (chat templates that append
  a newline after the end-of-turn token, as Qwen's does: those tokens are scored and trained on);
* `duplicated_system`: the chat template's system header appears twice or more in the prompt (a
  dataset whose prompt already carries a rendered system prompt, or a template that inserts its
  default one beside the data's);
* `truncated`: a completion cut by max_length (`tokens` counts the completion tokens dropped);
* `empty_completion`: a completion whose scored tokens decode, special tokens skipped, to nothing
  but whitespace (empty text rendered by a template as `<|im_end|>\n`, or a prompt that fills max_length).

Pure: no I/O except `audit_for_manifest`, which may load the plan's tokenizer. No streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from did_core.tokenization import TokenizedPair

MAX_IDS = 1000
"""Pair ids kept per problem in run.json (`count` is always the full count)."""
SENTINEL = "DIDAUDITSENTINEL"

PROBLEMS: dict[str, str] = {
    "prompt_ends_with_eos": "prompt already ends with EOS",
    "eos_in_prompt": "EOS inside the prompt (text formats)",
    "tokens_after_eos": "tokens after the completion's EOS",
    "duplicated_system": "system prompt appears twice in the prompt",
    "truncated": "response cut by max_length",
    "empty_completion": "empty completion",
}
"""Problem key -> the label the dashboard shows, in display order."""


@dataclass(frozen=True)
class Problem:
    """One problem: the pairs that have it."""

    count: int
    """Pairs with the problem."""
    pair_ids: tuple[str, ...] = ()
    """Their ids (the first MAX_IDS in run.json)."""
    tokens: int = 0
    """Tokens concerned: dropped by truncation, or scored after EOS (0 for the other problems)."""
    responses: int = 0
    """Responses (chosen or rejected) with it; 0 for the prompt's problems."""


@dataclass(frozen=True)
class Audit:
    """The tokenization audit of one run's pairs."""

    n_pairs: int
    problems: dict[str, Problem] = field(default_factory=dict)
    """PROBLEMS key -> Problem; a key is absent when it could not be checked (see `unchecked`)."""
    unchecked: dict[str, str] = field(default_factory=dict)
    """Problem key -> why it was not checked (e.g. no chat template for the system header)."""
    eos_ids: tuple[int, ...] = ()
    system_header: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (run.json's `extra.audit`): ids cut to MAX_IDS, counts kept whole."""
        return {"n_pairs": self.n_pairs, "eos_ids": list(self.eos_ids), "system_header": list(self.system_header),
                "unchecked": dict(self.unchecked),
                "problems": {k: {"label": PROBLEMS[k], "count": p.count, "pair_ids": list(p.pair_ids[:MAX_IDS]),
                                 "tokens": p.tokens, "responses": p.responses} for k, p in self.problems.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Audit:
        probs = {k: Problem(int(p["count"]), tuple(str(i) for i in p.get("pair_ids", ())), int(p.get("tokens", 0)),
                            int(p.get("responses", 0))) for k, p in (d.get("problems") or {}).items() if k in PROBLEMS}
        return cls(int(d.get("n_pairs", 0)), probs, dict(d.get("unchecked") or {}), tuple(d.get("eos_ids", ())),
                   tuple(d.get("system_header", ())))


def eos_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """The tokenizer's EOS id(s) (an int or a list, as some tokenizers and generation configs have)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]))


def system_header_ids(tokenizer: Any) -> tuple[int, ...]:
    """Token ids that open a system message in the tokenizer's chat template; () if it has none.

    The template renders a system message whose content is a sentinel; of the ids before the
    sentinel, the header is the last token whose text contains "system" together with the special
    tokens right around it: Qwen `<|im_start|>system`, Llama 3 `<|start_header_id|>system<|end_header_id|>`,
    the tiny template's `<|system|>`.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return ()
    try:
        text = tokenizer.apply_chat_template([{"role": "system", "content": SENTINEL},
                                              {"role": "user", "content": "hi"}], tokenize=False)
    except Exception:  # a template that rejects system messages has no system header to duplicate
        return ()
    if SENTINEL not in text:
        return ()
    ids = tokenizer(text[:text.index(SENTINEL)], add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {}) or {}}
    pieces = [tokenizer.decode([i]) for i in ids]
    hits = [j for j, p in enumerate(pieces) if "system" in p.lower()]
    if not hits:
        return ()
    j = hits[-1]
    lo = j - 1 if j > 0 and ids[j - 1] in special and ids[j - 1] != ids[j] else j
    hi = j + 1 if j + 1 < len(ids) and ids[j + 1] in special else j
    return tuple(ids[lo:hi + 1])


def count_occurrences(ids: Sequence[int], sub: Sequence[int]) -> int:
    """Non-overlapping occurrences of `sub` in `ids`. Naive O(len(ids)·len(sub)), fine for prompts."""
    n, k, i, c = len(ids), len(sub), 0, 0
    if k == 0:
        return 0
    while i + k <= n:
        if tuple(ids[i:i + k]) == tuple(sub):
            c, i = c + 1, i + k
        else:
            i += 1
    return c


def _after_eos(ids: Sequence[int], eos: set[int]) -> int:
    """Tokens after the first EOS of a completion (0 without one)."""
    for j, t in enumerate(ids):
        if t in eos:
            return len(ids) - j - 1
    return 0


def tokenization_audit(pairs: Sequence[TokenizedPair], tokenizer: Any, *, conversational: bool,
                       eos_ids: Iterable[int] | None = None) -> Audit:
    """The audit of `pairs` (module docstring). `eos_ids` defaults to the tokenizer's EOS."""
    eos = set(eos_token_ids(tokenizer) if eos_ids is None else (int(i) for i in eos_ids))
    header = system_header_ids(tokenizer)
    hits: dict[str, list[str]] = {k: [] for k in PROBLEMS}
    tokens = dict.fromkeys(PROBLEMS, 0)
    responses = dict.fromkeys(PROBLEMS, 0)
    for p in pairs:
        if p.prompt_ids and p.prompt_ids[-1] in eos:
            hits["prompt_ends_with_eos"].append(p.pair_id)
        if not conversational and any(t in eos for t in p.prompt_ids[:-1]):
            hits["eos_in_prompt"].append(p.pair_id)
        if header and count_occurrences(p.prompt_ids, header) >= 2:
            hits["duplicated_system"].append(p.pair_id)
        after = [_after_eos(p.chosen_ids, eos), _after_eos(p.rejected_ids, eos)]
        dropped = [p.chosen_dropped, p.rejected_dropped]
        empty = [not ids or not tokenizer.decode(list(ids), skip_special_tokens=True).strip()
                 for ids in (p.chosen_ids, p.rejected_ids)]
        for key, per_side, size in (("tokens_after_eos", after, sum(after)), ("truncated", dropped, sum(dropped)),
                                    ("empty_completion", empty, 0)):
            n = sum(1 for x in per_side if x)
            if n:
                hits[key].append(p.pair_id)
                responses[key] += n
                tokens[key] += size
    unchecked = {}
    if conversational:
        unchecked["eos_in_prompt"] = "conversational data: the chat template puts end-of-turn tokens in the prompt"
    if not header:
        unchecked["duplicated_system"] = "the tokenizer has no chat template with a system header"
    if not eos:
        unchecked.update({k: "the tokenizer has no EOS token" for k in
                          ("prompt_ends_with_eos", "eos_in_prompt", "tokens_after_eos")})
    problems = {k: Problem(len(hits[k]), tuple(hits[k]), tokens[k], responses[k]) for k in PROBLEMS
                if k not in unchecked}
    return Audit(len(pairs), problems, unchecked, tuple(sorted(eos)), header)


def audit_for_manifest(plan: Any, tokenizer: Any = None) -> dict[str, Any]:
    """run.json's `extra.audit` for a `score.ScorePlan` (its pairs, data and reference tokenizer).

    The plan keeps no tokenizer, so without one this loads the reference's (no weights) as the
    plan did. Never raises: a failure is recorded as `{"error": ...}` so that scoring still finishes.
    """
    try:
        if tokenizer is None:
            from did_core.models import load_tokenizer

            tokenizer = load_tokenizer(plan.reference, plan.settings)
    except Exception as e:  # the audit is a report: it must never fail a scoring job that has done its work
        return {"error": f"{type(e).__name__}: {e}"}
    return audit_record(plan.pairs, tokenizer, plan.data.conversational)


def audit_record(pairs: Sequence[TokenizedPair], tokenizer: Any, conversational: bool) -> dict[str, Any]:
    """run.json's `extra.audit` of `pairs` (the score job's, through `audit_for_manifest`, and the live
    callback's probe). Never raises: a failure is recorded as `{"error": ...}`."""
    try:
        return tokenization_audit(pairs, tokenizer, conversational=conversational).to_dict()
    except Exception as e:  # noqa: BLE001 — a report, never a reason to stop scoring
        return {"error": f"{type(e).__name__}: {e}"}
