"""The Runs page's tokenization audit (did_core/token_audit.py): a count per problem, and links to the
pairs that have it. Read from run.json's `extra.audit`, written when the run was scored."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from did_core.token_audit import PROBLEMS, Audit
from did_ui import picker, widgets

MISSING = "No tokenization audit recorded for this run (rescore to get one)."
LINKS = 12
"""Pairs linked per problem (the rest are counted)."""


DETAIL = {"truncated": "{r}, {t} dropped", "tokens_after_eos": "{r}, {t} scored after the completion's EOS"}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def audit_table(audit: Audit) -> pd.DataFrame:
    """One row per problem: pairs, their share, and what the count covers (responses and tokens
    concerned, or why a problem could not be checked) in words, so the table fits the page."""
    rows = []
    for key, label in PROBLEMS.items():
        p = audit.problems.get(key)
        if p is None:
            rows.append({"problem": label, "pairs": None, "share": None,
                         "detail": "not checked: " + audit.unchecked.get(key, "?")})
            continue
        detail = DETAIL[key].format(r=_n(p.responses, "response"), t=_n(p.tokens, "token")) if key in DETAIL and p.count else ""
        rows.append({"problem": label, "pairs": p.count,
                     "share": p.count / audit.n_pairs if audit.n_pairs else 0.0, "detail": detail})
    return pd.DataFrame(rows)


def tokenization_audit(v: picker.View) -> None:
    """The audit section, or one sentence saying there is none."""
    st.subheader("Tokenization audit")
    recorded = v.manifest.extra.get("audit")
    if not recorded:
        st.info(MISSING, icon=":material/fact_check:")
        return
    if "error" in recorded:
        st.warning(f"The tokenization audit failed when this run was scored: {recorded['error']}")
        return
    audit = Audit.from_dict(recorded)
    found = {k: p for k, p in audit.problems.items() if p.count}
    language = v.manifest.extra.get("language") or {}
    if v.manifest.extra.get("demo") and language.get("eos"):
        st.caption(f"This is the embedded demo: its toy language ends every prompt with its end symbol "
                   f"`{language['eos']}`, which is also its EOS, and `{language['eos']}` alone is a valid "
                   "response (the empty one). So \"prompt already ends with EOS\" on every pair and the "
                   "empty completions are by design here (docs/DEMO.md), not problems.")
    st.caption(f"What TRL's tokenization did to the {audit.n_pairs} pairs, as they were scored. "
               + ("No problem found." if not found else f"{len(found)} problem(s) found; pick one to list its pairs."))
    widgets.table(audit_table(audit), width="stretch",
                 column_config={"problem": st.column_config.TextColumn(width="large"),
                                "pairs": st.column_config.NumberColumn(width="small"),
                                "share": st.column_config.NumberColumn(format="%.3f", width="small"),
                                "detail": st.column_config.TextColumn(width="large")})
    if not found:
        return
    key = st.selectbox("Pairs with", list(found), format_func=lambda k: f"{PROBLEMS[k]} ({found[k].count})",
                       key="audit_problem")
    ids = found[key].pair_ids
    cols = st.columns(4)
    for i, pid in enumerate(ids[:LINKS]):
        with cols[i % 4]:
            st.page_link(widgets.PAGES["example"], label=f"pair {pid}", icon=":material/article:",
                         query_params=picker.example_link_params(v, pid))
    rest = found[key].count - min(LINKS, len(ids))
    if rest > 0:
        st.caption(f"… and {rest} more: " + ", ".join(ids[LINKS:LINKS + 50]) + (" …" if len(ids) > LINKS + 50 else ""))
