"""did_ui/page_list.py: every page in PAGES says which page it is, and owns its query parameters."""

from __future__ import annotations


def test_every_page_says_which_page_it_is():
    """widgets.current_page is what a page says in its first line (widgets.start_page): the key of its
    own file in page_list.PAGES, the url path whose query parameters it owns (selection.PAGE_PARAMS)."""
    from pathlib import Path

    from did_ui import page_list, selection

    root = Path(__file__).resolve().parents[1]
    for key, info in page_list.PAGES.items():
        code = [line for line in (root / info.path).read_text().splitlines() if line and not line.startswith(("#", " "))]
        starts = [line for line in code if "widgets.start_page(" in line]
        assert starts == [f'widgets.start_page("{key}")'], (info.path, starts)
        assert key in selection.PAGE_PARAMS
