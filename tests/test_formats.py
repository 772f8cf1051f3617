"""did_core/formats.py: raw records normalized to prompt / chosen / rejected: TRL's implicit-prompt rule
(and its quirks), the HH-RLHF split, and the first bad row named. Reading files is tests/test_data.py's."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from trl.data_utils import extract_prompt as trl_extract_prompt

from did_core.data import load_preference_data
from did_core.errors import InputError
from did_core.formats import HH_ASSISTANT, extract_prompt, normalize_rows

HH_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
SYS = {"role": "system", "content": "Be brief."}
U1 = {"role": "user", "content": "What is the abc?"}
U2 = {"role": "user", "content": "And then?"}


def write(records: list[dict], path: Path) -> Path:
    """`records` as a JSON Lines file."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_trl_space_quirk_in_implicit_prompt(tmp_path: Path) -> None:
    # TRL's extract_prompt moves a space before the first difference into the completions; and when one
    # response is a prefix of the other it stops one character early. We reproduce both.
    path = write([{"chosen": "Say hi", "rejected": "Say ho"}, {"chosen": "abc", "rejected": "abcd"}],
                 tmp_path / "d.jsonl")
    pairs = load_preference_data(str(path)).pairs
    assert pairs.iloc[0][["prompt", "chosen", "rejected"]].tolist() == ["Say h", "i", "o"]
    assert pairs.iloc[1][["prompt", "chosen", "rejected"]].tolist() == ["ab", "c", "cd"]


def test_hh_rlhf_sample() -> None:
    if not HH_SAMPLE.exists():
        pytest.skip(f"HH-RLHF sample absent: {HH_SAMPLE}")
    data = load_preference_data(str(HH_SAMPLE))
    pairs = data.pairs
    assert len(pairs) == 2312 and not data.conversational
    assert all(p.startswith("\n\nHuman:") and p.endswith(HH_ASSISTANT) for p in pairs["prompt"])
    assert all(c and r for c, r in zip(pairs["chosen"], pairs["rejected"]))
    # The prompt is shared: prompt + completion gives back each transcript.
    with gzip.open(HH_SAMPLE, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    assert all(p + c == r["chosen"] and p + rj == r["rejected"]
               for p, c, rj, r in zip(pairs["prompt"], pairs["chosen"], pairs["rejected"], raw))


@pytest.mark.parametrize("chosen,rejected", [
    ("Say hi", "Say ho"), ("abc", "abcd"), ("abc", "abc"), ("x y", "x z"), ("a b c", "a b d"), ("ab", "b"),
    ([SYS, U1, {"role": "assistant", "content": "a"}], [SYS, U1, {"role": "assistant", "content": "b"}]),
    ([U1, U2], [U1, U2]),
])
def test_extract_prompt_equals_trl(chosen, rejected) -> None:
    expected = trl_extract_prompt({"chosen": chosen, "rejected": rejected})
    assert extract_prompt(chosen, rejected) == (expected["prompt"], expected["chosen"], expected["rejected"])


def test_normalize_rows_keeps_extras_and_names_the_first_bad_row():
    """The three prompt rules on records (no file): an explicit prompt kept, an implicit one extracted, an
    HH-RLHF transcript split at its last Assistant turn; extras pass through; a bad row is named by
    its index and, when given, its line."""
    rows, conversational = normalize_rows([{"prompt": "Q:", "chosen": " a", "rejected": " b", "score": 1}], "d")
    assert rows == [{"score": 1, "prompt": "Q:", "chosen": " a", "rejected": " b"}] and not conversational
    rows, _ = normalize_rows([{"chosen": "Say hi", "rejected": "Say ho"}], "d")
    assert (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"]) == ("Say h", "i", "o")
    hh = "\n\nHuman: x\n\nAssistant:"
    rows, _ = normalize_rows([{"chosen": hh + " yes", "rejected": hh + " no"}], "d")
    assert (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"]) == (hh, " yes", " no")
    rows, conversational = normalize_rows([{"prompt": [U1], "chosen": [{"role": "assistant", "content": "a"}],
                                            "rejected": [{"role": "assistant", "content": "b"}]}], "d")
    assert conversational and rows[0]["prompt"] == [U1]
    with pytest.raises(InputError, match=r"row 1.*line 5.*'rejected'.*empty"):
        normalize_rows([{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c", "rejected": ""}],
                       "d.jsonl", lines=[2, 5])
