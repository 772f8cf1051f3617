"""did_ui/widgets.py: names from data are literal in markdown, counts from the environment; and the
dashboard's rule of using streamlit only through its public names."""

from __future__ import annotations

import pytest


def test_names_from_data_are_literal_in_markdown():
    pytest.importorskip("streamlit")
    from did_ui.widgets import md_literal

    assert md_literal("[x](javascript:alert(1))") == "\\[x\\]\\(javascript\\:alert\\(1\\)\\)"
    assert md_literal("**bold** `code` <b>") == "\\*\\*bold\\*\\* \\`code\\` \\<b\\>"
    assert md_literal("a\nb") == "a b"


@pytest.mark.parametrize(("value", "expected"), [(None, 1000), ("0", 0), ("250", 250), (" 40 ", 40), ("abc", 1000),
                                                 ("-5", 1000), ("1e3", 1000)])
def test_inline_pairs_comes_from_the_environment_or_defaults(set_env, value, expected):
    from did_ui import widgets

    set_env("DID_INLINE_PAIRS", value)
    assert widgets.env_count("DID_INLINE_PAIRS", 1000) == expected


def test_the_dashboard_uses_no_private_streamlit_name():
    """app.py, pages/ and did_ui/ use streamlit only as `import streamlit as st` and its public names:
    no `streamlit.runtime`/`streamlit.web`… import, no `st._…` attribute."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [root / "app.py", *sorted((root / "pages").glob("*.py")), *sorted((root / "did_ui").glob("*.py"))]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(from|import)\s+streamlit\.|\bst\._[A-Za-z]", line):
                found.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not found
