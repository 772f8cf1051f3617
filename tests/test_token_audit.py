"""The tokenization audit (did_core/token_audit.py) finds each problem planted in a dataset built to have it,
reports zero on a clean one, and audits a real score plan. The Runs page's display of it is
tests/test_audit_view.py's; the precision audit (did_core/audit.py) is tests/test_audit.py's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from did_core.data import PreferenceData
from did_core.tiny import build_tokenizer
from did_core.token_audit import (
    PROBLEMS,
    Audit,
    audit_for_manifest,
    count_occurrences,
    system_header_ids,
    tokenization_audit,
)
from did_core.tokenization import tokenize_pairs

ROOT = Path(__file__).resolve().parent.parent
# Qwen-like: every message ends with EOS and a newline, so each completion has one token after its EOS.
NEWLINE_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<eos>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SYS = {"role": "system", "content": "Be brief."}


def _data(rows: list[dict], conversational: bool) -> PreferenceData:
    df = pd.DataFrame([{"pair_id": str(i)} | r for i, r in enumerate(rows)])
    return PreferenceData(df, conversational, "test", "fp")


def _audit(rows, tokenizer, conversational=False, max_length=None) -> Audit:
    pairs = tokenize_pairs(_data(rows, conversational), tokenizer, max_length)
    return tokenization_audit(pairs, tokenizer, conversational=conversational)


def _counts(a: Audit) -> dict[str, int]:
    return {k: p.count for k, p in a.problems.items()}


def _chat(prompt, chosen, rejected):
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


CLEAN_TEXT = [{"prompt": "Q: why? A:", "chosen": " because", "rejected": " no"},
              {"prompt": "Say hi. ", "chosen": "hi", "rejected": "ho"}]
CLEAN_CHAT = [_chat([SYS, {"role": "user", "content": "hi"}], "yes", "no"),
              _chat([{"role": "user", "content": "why?"}], "because", "no")]


def test_clean_text_and_chat_report_zero():
    tok = build_tokenizer()
    a = _audit(CLEAN_TEXT, tok)
    assert a.n_pairs == 2 and set(a.problems) == set(PROBLEMS) and sum(_counts(a).values()) == 0
    c = _audit(CLEAN_CHAT, tok, conversational=True, max_length=256)
    assert sum(_counts(c).values()) == 0
    assert "eos_in_prompt" in c.unchecked and "duplicated_system" in c.problems


def test_eos_at_the_end_and_inside_a_prompt():
    tok = build_tokenizer()
    rows = CLEAN_TEXT + [{"prompt": "Q: x<eos>", "chosen": " a", "rejected": " b"},
                         {"prompt": "one<eos> two ", "chosen": "a", "rejected": "b"}]
    a = _audit(rows, tok)
    assert a.problems["prompt_ends_with_eos"].pair_ids == ("2",)
    assert a.problems["eos_in_prompt"].pair_ids == ("3",)
    assert _counts(a)["tokens_after_eos"] == 0  # TRL's appended EOS is the completion's last token


def test_a_template_that_appends_a_newline_after_eos():
    tok = build_tokenizer(chat_template=NEWLINE_TEMPLATE)
    a = _audit(CLEAN_CHAT, tok, conversational=True)
    p = a.problems["tokens_after_eos"]
    assert p.count == 2 and p.responses == 4 and p.tokens == 4  # one "\n" after <eos> in each response
    assert _counts(a)["prompt_ends_with_eos"] == 0 and _counts(a)["empty_completion"] == 0
    # the same data under the plain template: nothing after the completion's end
    assert _counts(_audit(CLEAN_CHAT, build_tokenizer(), conversational=True))["tokens_after_eos"] == 0


def test_truncated_response_counts_dropped_tokens():
    tok = build_tokenizer()
    rows = [{"prompt": "P: ", "chosen": "ok", "rejected": "no"}, {"prompt": "Q: ", "chosen": "yes", "rejected": "n"},
            {"prompt": "P: ", "chosen": "a much longer answer", "rejected": "no"}]
    pairs = tokenize_pairs(_data(rows, False), tok, 12)
    a = tokenization_audit(pairs, tok, conversational=False)
    p = a.problems["truncated"]
    # "P: " is 3 tokens, so 9 fit: chosen (20 chars + EOS = 21 tokens) loses 12; rejected ("no"+EOS) fits
    assert p.pair_ids == ("2",) and p.responses == 1 and p.tokens == 12
    assert p.tokens == sum(x.chosen_dropped + x.rejected_dropped for x in pairs)
    # a prompt that fills max_length leaves both completions empty
    full = tokenization_audit(tokenize_pairs(_data([{"prompt": "a long prompt", "chosen": "a", "rejected": "b"}],
                                                   False), tok, 5), tok, conversational=False)
    assert full.problems["empty_completion"].count == 1 and full.problems["truncated"].tokens == 4


def test_duplicated_system_prompt():
    tok = build_tokenizer()
    assert system_header_ids(tok) == (tok.convert_tokens_to_ids("<|system|>"),)
    rows = CLEAN_CHAT + [_chat([SYS, SYS, {"role": "user", "content": "hi"}], "yes", "no")]
    a = _audit(rows, tok, conversational=True)
    assert a.problems["duplicated_system"].pair_ids == ("2",)
    assert system_header_ids(build_tokenizer(chat_template=None)) == ()
    assert "duplicated_system" in _audit(CLEAN_TEXT, build_tokenizer(chat_template=None)).unchecked
    assert count_occurrences([1, 2, 1, 2, 1], [1, 2]) == 2 and count_occurrences([1, 1, 1], [1, 1]) == 1


def test_empty_completion():
    tok = build_tokenizer()
    rows = CLEAN_CHAT + [_chat([{"role": "user", "content": "hi"}], "yes", "")]
    a = _audit(rows, tok, conversational=True)
    assert a.problems["empty_completion"].pair_ids == ("2",) and a.problems["empty_completion"].responses == 1
    # under the newline template the empty answer is "<eos>\n": still empty
    b = _audit(rows, build_tokenizer(chat_template=NEWLINE_TEMPLATE), conversational=True)
    assert b.problems["empty_completion"].pair_ids == ("2",)


def test_round_trip_and_manifest_helper():
    tok = build_tokenizer()
    rows = CLEAN_TEXT + [{"prompt": "Q: x<eos>", "chosen": " a", "rejected": " b"}]
    data = _data(rows, False)
    a = tokenization_audit(tokenize_pairs(data, tok, None), tok, conversational=False)
    assert Audit.from_dict(a.to_dict()) == a
    plan = type("Plan", (), {"pairs": tokenize_pairs(data, tok, None), "data": data})()
    assert audit_for_manifest(plan, tok) == a.to_dict()
    assert "error" in audit_for_manifest(plan)  # no tokenizer to load: recorded, never raised


def test_audit_for_manifest_on_a_real_score_plan(tmp_path):
    """On a real plan (no tokenizer passed) it loads the reference's tokenizer and audits the plan's
    pairs; cli_world's data has no planted problem except what its max_length cuts, which must equal
    tokenization.truncation_report. The plan carries the same audit, and a scored run's run.json too."""
    from cli_world import build_world

    from did_core.score import plan_score
    from did_core.tokenization import truncation_report

    w = build_world(tmp_path / "world", n_pairs=6)
    plan = plan_score(str(w["data"]), str(w["ref"]), run_dir=str(w["run"]))
    audit = audit_for_manifest(plan)
    assert "error" not in audit, audit
    assert audit["n_pairs"] == len(plan.pairs) == 6
    report = truncation_report(plan.pairs)
    assert audit["problems"]["truncated"]["tokens"] == report["dropped_tokens"]
    assert audit["problems"]["truncated"]["count"] == report["truncated_pairs"]
    assert plan.audit == audit  # plan_score audits with the tokenizer it already holds
    from did_core.score import execute
    from did_core.workspace import Workspace

    execute(plan, tmp_path / "ws")
    assert Workspace(tmp_path / "ws").run(plan.run_name).extra["audit"] == audit
