"""The page frame and the small layout helpers every page shares: the router guard and the page
frame (`start_page`, `ensure_router`, `current_page`, `page_frame`, `end_page`), literal names in
Markdown, link warnings, tables, per-pair charts and drill-downs, the empty state and export buttons.

The picker bound to the URL is did_ui/picker.py, the job panel did_ui/job_panel.py, the token
colouring did_ui/token_colours.py. Dataset text is never interpreted: names go through
`md_literal`, whole prompts/responses are shown with `st.text`/`st.code`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

import streamlit as st

from did_ui import data, page_list

if TYPE_CHECKING:
    from did_ui.picker import View

PAGES = {key: p.path for key, p in page_list.PAGES.items()}
"""url path -> the page's file (for st.page_link / st.switch_page)."""


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def md_literal(text: object) -> str:
    """`text` (a run, checkpoint or pair name: data, not markup) escaped for st.markdown/caption."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


ROUTED = "_did_routed"
"""Session-state key app.py sets on every run: this session has been through the router."""


def ensure_router() -> None:
    """Make app.py's `st.navigation` the router even when the first request is a deep link.

    Streamlit 1.67 treats a `pages/` folder beside the entrypoint as a v1 multipage app until the
    entrypoint calls `st.navigation`: a server's first visit straight to `/example?...` would run
    pages/example.py alone (no page config, a file-name menu). Each page calls this first (`start_page`). The
    switch is per process, but each session that started under it was sent the v1 menu: so any
    session not yet through app.py (ROUTED unset: its first run, a page load, so no button press
    can be lost) reruns, which runs app.py and then this page again (url paths equal the file
    names; Runs is also the default page at /), even when another session flipped the
    switch meanwhile (tests/test_browser.py opens several deep links at once on a fresh server).
    Under app.py, ROUTED is set before the page runs, so the page just runs. The switch is flipped
    with the public API: a call of `st.navigation` ends the v1 behaviour for the process (Streamlit's
    documented rule: with st.navigation, the pages/ folder is ignored); tests/test_browser.py's
    deep links on a fresh server prove the whole path.
    """
    if not st.session_state.get(ROUTED):
        st.navigation([st.Page(p) for p in PAGES.values()], position="hidden")
        st.rerun()


PAGE = "_did_page"
"""Session-state key of the page the session's last full run showed (its page_list.PAGES key): `start_page`."""


def start_page(page: str) -> None:
    """The first line of every page: route (`ensure_router`), note which page this is
    (`current_page`) and draw its heading. `page` is its key in page_list.PAGES, which equals the
    url path app.py serves it at (Runs is also served at /)."""
    ensure_router()
    st.session_state[PAGE] = page
    st.title(page_list.PAGES[page].heading)


def current_page() -> str | None:
    """The page this run shows (its page_list.PAGES key, the url path that owns its query
    parameters: selection.PAGE_PARAMS), as the page said in `start_page`; None before any page ran.
    Read from the page itself, not from Streamlit's page registry: under AppTest a page switched to
    runs alone, without app.py, and the registry is not public API."""
    return st.session_state.get(PAGE)


class EndPage(Exception):
    """Raised by `end_page` inside `page_frame`: the page's script ends there."""


_FRAMED: contextvars.ContextVar[bool] = contextvars.ContextVar("did_page_framed", default=False)


@contextlib.contextmanager
def page_frame() -> Iterator[None]:
    """Around app.py's `page.run()`: a page that ends early (`end_page`) ends only itself, and the
    script goes on to draw the menu. `st.stop()` would end the menu too: once a stop is requested,
    every later `st.*` call of the run stops it again (the menu vanished from Compare with A = B)."""
    token = _FRAMED.set(True)
    try:
        yield
    except EndPage:
        pass
    finally:
        _FRAMED.reset(token)


def end_page() -> NoReturn:
    """End the page here (what it drew stays): inside app.py's `page_frame` only the page ends;
    a page run alone (AppTest) stops as with `st.stop()`."""
    if _FRAMED.get():
        raise EndPage
    st.stop()


def warn_link(messages) -> None:
    """One warning per deep-link value that could not be honoured (what was asked, what is shown)."""
    for message in messages:
        st.warning(md_literal(message), icon=":material/link_off:")


SCATTER_CONFIG = {"plotGlPixelRatio": 1}
"""Plotly draws WebGL scatters at twice the screen resolution by default. At 1, a full load of a page
with a 2,000-point scatter took ~0.25 s less browser CPU (Chromium, software rendering, this
machine; docs/ARCHITECTURE.md, "Serving"). On a high-DPI screen the markers are drawn at CSS
resolution and scaled up: slightly softer edges."""


MISSING = "—"
"""How every table shows a missing value: a value that does not exist (the ordering at the first
checkpoint, a CHES of an empty response) reads as a dash, not as Streamlit's default "None"."""


def table(data, **kwargs) -> object:
    """`st.dataframe` without the index and with missing values shown as `MISSING` (every table of the
    dashboard goes through here)."""
    return st.dataframe(data, hide_index=True, placeholder=MISSING, **kwargs)


def pair_chart(fig, key: str) -> object:
    """A per-pair scatter (figures.pair_scatter) whose points, box or lasso selection reruns the page:
    returns the selection event (did_ui.selection reads the pair ids)."""
    return st.plotly_chart(fig, key=key, on_select="rerun", selection_mode=("points", "box", "lasso"),
                           config=SCATTER_CONFIG)


def env_count(name: str, default: int) -> int:
    """A whole number >= 0 from the environment; `default` when unset or not one."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


INLINE_PAIRS = env_count("DID_INLINE_PAIRS", 1000)
"""Per-pair scatters of runs with up to this many pairs are drawn when the page opens; above it they
wait in a closed drill-down (DID_INLINE_PAIRS in the environment, a whole number, overrides). What
a page's full load costs the browser grows with the points drawn: at 2,000 pairs, Compare with its
scatter 1.77 s of Chromium CPU, without 1.04 s (bench/page_cpu.py; docs/ARCHITECTURE.md, "Serving")."""


def drill_down(label: str, key: str, expanded: bool = False):
    """An expander whose content the page runs and the browser draws only while it is open (returns
    the expander then, else None). It starts `expanded` and then keeps the user's choice for the
    session: heavy per-pair views behind it keep a full page load cheap. The choice is kept under a
    second key too, because Streamlit drops a widget's state on pages that do not draw it."""
    remembered = f"_{key}_open"
    box = st.expander(label, expanded=st.session_state.get(remembered, expanded), key=key, on_change="rerun")
    st.session_state[remembered] = bool(box.open)
    return box if box.open else None


def remembered_multiselect(label: str, options: list, default: list, key: str, **kwargs) -> list:
    """st.multiselect whose choice is kept for the session across pages (Streamlit drops a widget's
    state on pages that do not draw it); `default` until the user chooses."""
    remembered = f"_{key}_value"
    start = [o for o in st.session_state.get(remembered, default) if o in options]
    value = st.multiselect(label, options, default=start, key=key, **kwargs)
    st.session_state[remembered] = value
    return value


def pair_drill_down(v: View, what: str, key: str):
    """drill_down for a per-pair scatter of `v.run` ("Each pair (N): `what`"), open at first for runs
    of up to INLINE_PAIRS pairs."""
    n = len(data.pair_ids(v.root, v.run, v.ver))
    return drill_down(f"Each pair ({n:,}): {what}", key, expanded=n <= INLINE_PAIRS)


def no_runs(root: str) -> None:
    """What a page shows when the workspace has no scored runs."""
    st.info(f"No scored runs in the workspace `{root}` yet. The **Runs** page builds the embedded demo; "
            "the **Score** page scores your own dataset and checkpoints.")
    st.page_link(PAGES["runs"], label="Open Runs", icon=":material/table_view:")


def export_buttons(v: View) -> None:
    """CSV, Parquet and TRL reference-log-prob downloads (built when pressed)."""
    c1, c2, c3 = st.columns(3)
    name = v.run
    c1.download_button("Pairs CSV", lambda: data.export_bytes(v.root, v.run, "csv"), f"{name}-pairs.csv", "text/csv",
                       on_click="ignore", icon=":material/download:")
    c2.download_button("Pairs Parquet", lambda: data.export_bytes(v.root, v.run, "parquet"), f"{name}-pairs.parquet",
                       "application/octet-stream", on_click="ignore", icon=":material/download:")
    c3.download_button("TRL ref-logp dataset", lambda: data.export_bytes(v.root, v.run, "trl"),
                       f"{name}-trl-reference.parquet", "application/octet-stream", on_click="ignore",
                       icon=":material/download:", help="The dataset with TRL's ref_chosen_logps / ref_rejected_logps")
