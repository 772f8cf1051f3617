"""Token ids equal TRL 1.16's own: `DPOTrainer._prepare_dataset` then `DataCollatorForPreference`.

TRL's method is called unbound with the two attributes it reads (`_tokenizer`, and args'
`dataset_num_proc`, `max_length`, `truncation_mode`), so no model or trainer is built. Truncation is
left to the collator (TRL's dataset filter for prompt-filling pairs is the one documented difference:
we keep those pairs with empty completions).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import pandas as pd
import pytest
from tokenizers import processors
from trl.data_utils import extract_prompt as trl_extract_prompt
from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer

from did_core.data import PreferenceData, load_preference_data
from did_core.errors import InputError
from did_core.formats import split_hh
from did_core.tiny import build_tokenizer
from did_core.tokenization import TokenizedPair, tokenize_pairs, truncation_report

datasets.disable_progress_bars()
HH_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
MERGES = [("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")]

SYS = {"role": "system", "content": "Be brief."}
U1 = {"role": "user", "content": "What is the abc?"}
U2 = {"role": "user", "content": "And then?"}

CASES: dict[str, list[dict]] = {
    "standard_explicit": [
        {"prompt": "the a", "chosen": "bc the", "rejected": "b x"},  # "a"+"bc" merges across the boundary
        {"prompt": "Say t", "chosen": "he end", "rejected": "ea"},  # "t"+"he" -> "the"
        {"prompt": "xyz ", "chosen": "the end<eos>", "rejected": "nope"},  # EOS already there: not doubled
        {"prompt": "Q: why?\nA:", "chosen": " because the abc is long enough to be cut", "rejected": " no"},
    ],
    "standard_implicit": [
        {"chosen": "the abc", "rejected": "the abd"},
        {"chosen": "Say hi there", "rejected": "Say ho there"},
        {"chosen": "Why? Because the sky is blue.", "rejected": "Why? Because."},
    ],
    "conversational_explicit": [
        {"prompt": [SYS, U1], "chosen": [{"role": "assistant", "content": "the abc"}],
         "rejected": [{"role": "assistant", "content": "no"}]},
        {"prompt": [U1], "chosen": [{"role": "assistant", "content": "bc"}],
         "rejected": [{"role": "assistant", "content": "a long answer to be truncated"}]},
    ],
    "conversational_implicit": [
        {"chosen": [SYS, U1, {"role": "assistant", "content": "yes"}, U2, {"role": "assistant", "content": "ab"}],
         "rejected": [SYS, U1, {"role": "assistant", "content": "yes"}, U2, {"role": "assistant", "content": "c"}]},
        {"chosen": [U1, {"role": "assistant", "content": "the"}], "rejected": [U1, {"role": "assistant",
                                                                                    "content": "then"}]},
    ],
}
# Renders the prompt alone differently from the prompt inside the full conversation (like Gemma's
# empty thought block), so the completion must start where the two diverge, not after the prompt.
ODD_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n\n{% endif %}"
)


def _tokenizers() -> dict:
    bos = build_tokenizer(merges=MERGES)
    bos._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|system|> $A", special_tokens=[("<|system|>", 2)])  # a BOS-like token added by tokenizer(text)
    return {"plain": build_tokenizer(merges=MERGES), "bos": bos,
            "odd_template": build_tokenizer(merges=MERGES, chat_template=ODD_TEMPLATE)}


TOKENIZERS = _tokenizers()


def trl_prepare(rows: list[dict], tokenizer) -> list[dict[str, list[int]]]:
    """TRL's `_prepare_dataset` (prompt extraction, EOS, tokenization), without its max_length filter."""
    args = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    ds = DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer), datasets.Dataset.from_list(rows),
                                     tokenizer, args, "test")
    return [{k: ex[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for ex in ds]


def trl_sequences(prepared: list[dict[str, list[int]]], tokenizer, max_length: int | None) -> list[dict]:
    """What TRL's collator trains on, per pair: each full sequence and the completion tokens its mask selects."""
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=max_length)
    out = []
    for ex in prepared:
        batch = collator([ex])
        seq = {}
        for side, row in (("chosen", 0), ("rejected", 1)):
            ids, attn, mask = (batch[k][row].tolist() for k in ("input_ids", "attention_mask", "completion_mask"))
            seq[side] = [t for t, a in zip(ids, attn) if a]
            seq[side + "_completion"] = [t for t, m in zip(ids, mask) if m]
        out.append(seq)
    return out


def _write_jsonl(rows: list[dict], path: Path) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("tok_name", list(TOKENIZERS))
@pytest.mark.parametrize("case", list(CASES))
def test_token_ids_equal_trl(case: str, tok_name: str, tmp_path: Path) -> None:
    rows, tokenizer = CASES[case], TOKENIZERS[tok_name]
    data = load_preference_data(_write_jsonl(rows, tmp_path / "d.jsonl"))
    prepared = trl_prepare(rows, tokenizer)
    for max_length in (None, 3, 6, 9, 14, 1000):
        ours = tokenize_pairs(data, tokenizer, max_length)
        theirs = trl_sequences(prepared, tokenizer, max_length)
        for pair, trl in zip(ours, theirs, strict=True):
            for side in ("chosen", "rejected"):
                completion = getattr(pair, f"{side}_ids")
                assert list(pair.prompt_ids + completion) == trl[side], (side, max_length)
                assert list(completion) == trl[side + "_completion"], (side, max_length)


def test_boundary_merge_moves_completion_start(tokenizer) -> None:
    pairs = pd.DataFrame({"pair_id": ["0"], "prompt": ["the a"], "chosen": ["bc"], "rejected": ["b"]})
    data = PreferenceData(pairs=pairs, conversational=False, source="memory", fingerprint="-")
    (pair,) = tokenize_pairs(data, tokenizer, None)
    vocab = tokenizer.get_vocab()
    assert pair.prompt_ids == (vocab["the"], vocab[" "])  # the prompt's "a" merged into the completion
    assert pair.chosen_ids == (vocab["abc"], tokenizer.eos_token_id)
    assert pair.rejected_ids == (vocab["ab"], tokenizer.eos_token_id)


def test_prompt_filling_max_length_keeps_pair_and_counts_it(tmp_path: Path, tokenizer) -> None:
    rows = [{"prompt": "a long prompt", "chosen": "x", "rejected": "yy"},
            {"prompt": "p", "chosen": "short", "rejected": "z"}]
    data = load_preference_data(_write_jsonl(rows, tmp_path / "d.jsonl"))
    first, second = tokenize_pairs(data, tokenizer, 5)
    assert len(first.prompt_ids) == 5 and first.chosen_ids == first.rejected_ids == ()
    assert (first.chosen_dropped, first.rejected_dropped) == (2, 3)  # "x"+eos, "yy"+eos
    assert len(second.chosen_ids) == 4 and second.chosen_dropped == 2 and second.rejected_dropped == 0
    report = truncation_report([first, second])
    assert report == {"n_pairs": 2, "truncated_responses": 3, "truncated_pairs": 2, "fully_truncated_pairs": 1,
                      "dropped_tokens": 7, "fully_truncated_ids": ["0"]}
    assert truncation_report(tokenize_pairs(data, tokenizer, None))["truncated_pairs"] == 0


def test_tokenizer_errors_are_input_errors(tmp_path: Path) -> None:
    strict = build_tokenizer(chat_template=(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"))
    rows = [{"prompt": [U1], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}], "id": "first"},
            {"prompt": [SYS, U1], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}], "id": "second"}]
    data = load_preference_data(_write_jsonl(rows, tmp_path / "d.jsonl"))
    with pytest.raises(InputError, match="pair_id second: the tokenizer's chat template fails.*no system turns"):
        tokenize_pairs(data, strict, None)
    with pytest.raises(InputError, match="no chat template"):
        tokenize_pairs(data, build_tokenizer(chat_template=None), None)
    with pytest.raises(InputError, match="max-length"):
        tokenize_pairs(data, strict, 0)


def test_tokenized_pair_is_frozen() -> None:
    pair = TokenizedPair("0", (1,), (2,), (3,), 0, 0)
    with pytest.raises(AttributeError):
        pair.pair_id = "1"  # type: ignore[misc]


def test_hh_split_equals_trl_when_answers_differ_at_once_and_tokenizes_fast(tokenizer) -> None:
    if not HH_SAMPLE.exists():
        pytest.skip(f"HH-RLHF sample absent: {HH_SAMPLE}")
    with gzip.open(HH_SAMPLE, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    agree = 0
    for r in raw:
        trl = trl_extract_prompt(r)
        if trl["prompt"].endswith("\n\nAssistant:"):  # TRL's rule landed on the turn boundary: same split
            assert split_hh(r["chosen"], r["rejected"]) == (trl["prompt"], trl["chosen"], trl["rejected"])
            agree += 1
    assert agree > len(raw) // 2
    data = load_preference_data(str(HH_SAMPLE))
    start = time.perf_counter()
    pairs = tokenize_pairs(data, tokenizer, 512)
    assert time.perf_counter() - start < 10  # batched: ~1 s for 2,312 pairs on one core
    assert len(pairs) == 2312 and all(p.chosen_ids or p.chosen_dropped for p in pairs)
