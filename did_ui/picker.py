"""The run / checkpoint / example picker bound to the URL: `view()` (what a page shows, validated,
with the sidebar's pickers), the app's menu of page links carrying each page's selection
(`page_menu`), and opening a pair in the inspector in one history entry (`open_example`).

Names in the URL (runs, checkpoints, pair ids) are data: every one is validated against the
workspace (did_ui.selection) before it is shown, and quoted with `widgets.md_literal`.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from did_core.manifest import RunManifest
from did_core.run_settings import NUMERICS_LABEL
from did_ui import data, live, selection, views, widgets

REMEMBER = "_did_view"
"""Session key of the selection the menu's links carry (page_menu): what each page last showed."""


@dataclass(frozen=True)
class View:
    """The validated selection a page shows, plus the cache keys it reads with."""

    root: str
    ver: str
    run: str
    ckpt: str | None
    a: str | None
    example: str | None
    manifest: RunManifest
    numerics: str = "exact"
    """The numerics every number on the page is in (`ver` keys the caches by it: data.view_version)."""


# --- navigation and the URL -------------------------------------------------------------------
# Streamlit 1.67's browser side pushes a history entry for every query-string change the script
# sends (each `st.query_params[k] = v`, `update`, `from_dict`, and `st.switch_page`'s query_params),
# at the address the browser shows *then*, and one more when the page's path changes; a click in
# st.navigation's own menu drops every query parameter. Only a click on `st.page_link` changes the
# page and its query in one entry, and Back/Forward reruns replace rather than push. So: the menu
# is our own page links, each carrying its page's parameters; a picker writes the URL once
# (`from_dict`, in its callback); a view writes nothing unless it must correct a value it could not
# honour. docs/ARCHITECTURE.md, "Navigation and the URL", has the evidence.

def _baselines(ckpts: list[str]) -> tuple[list[str], str]:
    """Compare's A: the reference or a checkpoint (views.compare_baselines), by default the first checkpoint."""
    return views.compare_baselines(ckpts), views.default_baseline(ckpts)


def _resolve(root: str, runs: list[str], params: dict, keys: tuple[str, ...]) -> selection.Resolution:
    return selection.resolve(params, runs, lambda r: data.checkpoints(root, r, data.run_version(root, r)),
                             lambda r: data.pair_id_list(root, r, data.run_version(root, r)), keys=keys,
                             baselines=_baselines, numerics_of=lambda r: data.numerics(root, r))


def _write_url(values: dict[str, str], owned: tuple[str, ...]) -> None:
    """Set the URL to `values` and this page's other owned parameters as they are (others are dropped),
    in one query-string change, and only if that changes it: each change is a history entry."""
    current = st.query_params.to_dict()
    new = {k: v for k in owned if (v := values.get(k) or current.get(k))}
    if new != current:
        st.query_params.from_dict(new)


def _remember(state: selection.ViewState, keys: tuple[str, ...]) -> None:
    """Keep what this page shows for the menu's links to other pages (selection.PAGE_PARAMS); a
    checkpoint A or an example chosen under another run is dropped."""
    remembered = st.session_state.setdefault(REMEMBER, {})
    if remembered.get("run") != state.run:
        for key in ("a", "example"):
            remembered.pop(key, None)
    remembered.update({k: v for k in keys if (v := getattr(state, k)) is not None})


def _pick(label: str, key: str, param: str, options: list[str], value: str | None, keys: tuple[str, ...],
          owned: tuple[str, ...], root: str, runs: list[str], **selectbox) -> str | None:
    """A sidebar selectbox whose value lives in the URL (`param`). A change writes the page's whole
    selection at once, in the callback (before the script runs, so that this run reads it): one
    query-string change, one history entry. A checkpoint or example the new run lacks falls back
    to its default, silently (the user chose the run; nothing to warn about)."""
    if not options:
        return None
    st.session_state[key] = value if value in options else options[0]

    def to_url() -> None:
        asked = {k: v for k, v in st.query_params.to_dict().items() if k in keys}
        state = _resolve(root, runs, {**asked, param: st.session_state[key]}, keys).state
        _write_url(selection.to_query_params(state, keys), owned)
        _remember(state, keys)

    return st.sidebar.selectbox(label, options, key=key, on_change=to_url, **selectbox)


def view(need_a: bool = False) -> View | None:
    """Resolve run / checkpoint / example from the URL, warn about every value that cannot be shown,
    draw the sidebar pickers; None (with an empty state drawn) when there are no runs.

    Only the parameters this page owns are read (selection.PAGE_PARAMS; `a`, Compare's A, the
    reference or a checkpoint, with `need_a`), and the URL alone decides: nothing this session
    showed elsewhere fills a gap, so Back and Forward restore exactly the view their address names.
    The URL is written only to correct a value that was not honoured (once, with all corrections)."""
    root = data.workspace_root()
    runs = data.run_names(root, data.version(root))
    if not runs:
        widgets.no_runs(root)
        return None
    owned = selection.page_params(widgets.current_page(), need_a)
    keys = tuple(k for k in owned if k != "a" or need_a)
    resolution = _resolve(root, runs, st.query_params.to_dict(), keys)
    widgets.warn_link(resolution.warnings)
    state = resolution.state
    pick = dict(keys=keys, owned=owned, root=root, runs=runs)
    run = _pick("Run", "pick_run", "run", runs, state.run, **pick, format_func=live.run_label(root))
    assert run is not None
    ver = data.run_version(root, run)
    ckpts = data.checkpoints(root, run, ver)
    ckpt = _pick("Checkpoint" + (" B" if need_a else ""), "pick_ckpt", "ckpt", ckpts, state.ckpt, **pick)
    a = None
    if need_a:
        baselines, _ = _baselines(ckpts)
        a = _pick("Compare from A", "pick_a", "a", baselines, state.a, **pick, help="B is the checkpoint picked "
                  "above; deltas are B − A.", format_func=lambda m: "reference (π_ref)" if m == baselines[0] else m)
    have = data.numerics(root, run)
    numerics = have[0]
    if "numerics" in keys and len(have) > 1:
        numerics = _pick("Numerics", "pick_numerics", "numerics", have, state.numerics or have[0], **pick,
                         format_func=NUMERICS_LABEL.get,
                         help="exact: the weights' true log-probs (float32 forward, float64 sums). trainer: the "
                              "forward as the trainer ran it (its bf16/fp16 autocast and eval batches), which "
                              "reproduces what it logged. docs/NUMERICS.md") or numerics
    if resolution.warnings:
        _write_url(resolution.corrected_url(), owned)
    _remember(state, keys)
    manifest = data.run_manifest(root, run, ver)
    beta = "?" if manifest.beta is None else manifest.beta
    st.sidebar.caption(f"Workspace {widgets.md_literal(root)} · β = {widgets.md_literal(beta)} · "
                       f"{widgets.md_literal(manifest.dataset.n_pairs or '?')} pairs · reference "
                       f"{widgets.md_literal(manifest.reference.name or '?')} · numerics {numerics}")
    return View(root=root, ver=data.view_version(root, run, numerics), run=run, ckpt=ckpt, a=a,
                example=state.example, manifest=manifest, numerics=numerics)


def page_menu(box, sections: dict[str, list], current: str | None) -> None:
    """The app's menu, in `box` (a sidebar container made before the page ran): one st.page_link per
    page, carrying that page's part of the selection (selection.PAGE_PARAMS). app.py hides
    st.navigation's own menu, whose links drop every query parameter: the page then wrote them
    back, 3-4 history entries per click. Drawn after the page ran, so that it carries what the page
    has just shown, including what a page set in the URL itself (Compare's A, Example's pair).
    `current`: the url path of the page that ran (its `st.navigation` page's `url_path`)."""
    remembered = st.session_state.setdefault(REMEMBER, {})
    url = st.query_params.to_dict()
    remembered.update({k: url[k] for k in selection.page_params(current) if url.get(k)})
    with box:
        for section, pages in sections.items():
            st.caption(section)
            for page in pages:
                params = {k: remembered[k] for k in selection.page_params(page.url_path) if remembered.get(k)}
                st.page_link(page, query_params=params or None)


def open_example(v: View, pair_id: str, ckpt: str | None = None) -> None:
    """Open the inspector for `pair_id` (a validated id of `v.run`) in one history entry.

    On the Example page itself a switch is one query change (one entry). From another page a
    server-side `st.switch_page` costs two (Streamlit 1.67's browser side pushes the new query at the
    old address, then the new page), and only a click on a `st.page_link` changes page and query in
    one: so the pair's link is drawn and a script clicks it at once (`st.html` with
    `unsafe_allow_javascript`, documented API). Without JavaScript the link is there to click."""
    params = example_link_params(v, pair_id, ckpt)
    st.session_state.setdefault(REMEMBER, {}).update(params)
    if widgets.current_page() == "example":
        st.switch_page(widgets.PAGES["example"], query_params=params)
    with st.container(key=OPEN_EXAMPLE_KEY):
        st.page_link(widgets.PAGES["example"], label=f"Open pair {pair_id} in the inspector", icon=":material/article:",
                     query_params=params)
    st.html(_CLICK_ONCE.replace("KEY", OPEN_EXAMPLE_KEY), unsafe_allow_javascript=True)


OPEN_EXAMPLE_KEY = "did_open_example"
_CLICK_ONCE = """<script>
(() => {  // click the link in .st-key-KEY as soon as it is drawn (for up to 5 s), once
  const t0 = Date.now();
  const go = () => {
    const a = document.querySelector(".st-key-KEY a");
    if (a) { a.click(); } else if (Date.now() - t0 < 5000) { setTimeout(go, 30); }
  };
  go();
})();
</script>"""


def example_link_params(v: View, pair_id: str, ckpt: str | None = None) -> dict[str, str]:
    """The query of a st.page_link to the inspector for `pair_id` (one history entry when clicked)."""
    return {"run": v.run, "ckpt": ckpt or v.ckpt or "", "example": pair_id}
