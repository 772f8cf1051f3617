"""Layout helpers shared by the pages: the run/checkpoint picker bound to the URL, empty states,
the background-job progress panel, export buttons and the token colouring.

Dataset text is never interpreted: token pieces go through `html.escape` before any HTML is
built, and whole prompts/responses are shown with `st.text`/`st.code`.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import pandas as pd
import streamlit as st

from did_core.manifest import RunManifest
from did_core.run_settings import NUMERICS_LABEL
from did_ui import data, jobs, live, page_list, selection, views

PAGES = {key: p.path for key, p in page_list.PAGES.items()}
"""url path -> the page's file (for st.page_link / st.switch_page)."""


def title(page: str) -> None:
    """The page's heading (page_list.PAGES)."""
    st.title(page_list.PAGES[page].heading)
REMEMBER = "_did_view"
"""Session key of the selection the menu's links carry (page_menu): what each page last showed."""


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
    pages/example.py alone (no page config, a file-name menu). Each page calls this first. The
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

def current_page() -> str | None:
    """The url path of the page this run shows ("" for the default page at /), as Streamlit's page
    registry has it: app.py's pages, or pages/ file names when a page runs alone (AppTest), which
    are the same names."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    info = ctx.pages_manager.get_pages().get(ctx.page_script_hash) if ctx is not None else None
    return info.get("url_pathname") if info else None


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


def warn_link(messages) -> None:
    """One warning per deep-link value that could not be honoured (what was asked, what is shown)."""
    for message in messages:
        st.warning(md_literal(message), icon=":material/link_off:")


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
        no_runs(root)
        return None
    owned = selection.page_params(current_page(), need_a)
    keys = tuple(k for k in owned if k != "a" or need_a)
    resolution = _resolve(root, runs, st.query_params.to_dict(), keys)
    warn_link(resolution.warnings)
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
    st.sidebar.caption(f"Workspace {md_literal(root)} · β = {md_literal(beta)} · "
                       f"{md_literal(manifest.dataset.n_pairs or '?')} pairs · reference "
                       f"{md_literal(manifest.reference.name or '?')} · numerics {numerics}")
    return View(root=root, ver=data.view_version(root, run, numerics), run=run, ckpt=ckpt, a=a,
                example=state.example, manifest=manifest, numerics=numerics)


def page_menu(box, sections: dict[str, list]) -> None:
    """The app's menu, in `box` (a sidebar container made before the page ran): one st.page_link per
    page, carrying that page's part of the selection (selection.PAGE_PARAMS). app.py hides
    st.navigation's own menu, whose links drop every query parameter: the page then wrote them
    back, 3-4 history entries per click. Drawn after the page ran, so that it carries what the page
    has just shown, including what a page set in the URL itself (Compare's A, Example's pair)."""
    remembered = st.session_state.setdefault(REMEMBER, {})
    url = st.query_params.to_dict()
    remembered.update({k: url[k] for k in selection.page_params(current_page()) if url.get(k)})
    with box:
        for section, pages in sections.items():
            st.caption(section)
            for page in pages:
                params = {k: remembered[k] for k in selection.page_params(page.url_path) if remembered.get(k)}
                st.page_link(page, query_params=params or None)


SCATTER_CONFIG = {"plotGlPixelRatio": 1}
"""Plotly draws WebGL scatters at twice the screen resolution by default. At 1, a full load of a page
with a 2,000-point scatter took ~0.25 s less browser CPU (Chromium, software rendering, this
machine; docs/ARCHITECTURE.md, "Serving"). On a high-DPI screen the markers are drawn at CSS
resolution and scaled up: slightly softer edges."""


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


def open_example(v: View, pair_id: str, ckpt: str | None = None) -> None:
    """Open the inspector for `pair_id` (a validated id of `v.run`) in one history entry.

    On the Example page itself a switch is one query change (one entry). From another page a
    server-side `st.switch_page` costs two (Streamlit 1.67's browser side pushes the new query at the
    old address, then the new page), and only a click on a `st.page_link` changes page and query in
    one: so the pair's link is drawn and a script clicks it at once (`st.html` with
    `unsafe_allow_javascript`, documented API). Without JavaScript the link is there to click."""
    params = example_link_params(v, pair_id, ckpt)
    st.session_state.setdefault(REMEMBER, {}).update(params)
    if current_page() == "example":
        st.switch_page(PAGES["example"], query_params=params)
    with st.container(key=OPEN_EXAMPLE_KEY):
        st.page_link(PAGES["example"], label=f"Open pair {pair_id} in the inspector", icon=":material/article:",
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


def no_runs(root: str) -> None:
    """What a page shows when the workspace has no scored runs."""
    st.info(f"No scored runs in the workspace `{root}` yet. The **Runs** page builds the embedded demo; "
            "the **Score** page scores your own dataset and checkpoints.")
    st.page_link(PAGES["runs"], label="Open Runs", icon=":material/table_view:")


def demo_panel(root: str) -> None:
    """Empty workspace on Runs: start (once, automatically) or show the demo build."""
    st.subheader("This workspace has no runs yet")
    demo_jobs = jobs.list_jobs(root, kind="demo")
    if not demo_jobs and os.environ.get("DID_AUTO_DEMO", "1") != "0" and jobs.claim_once(root, "auto-demo"):
        jobs.start(root, jobs.demo_argv(root), kind="demo")
        demo_jobs = jobs.list_jobs(root, kind="demo")
    if demo_jobs and demo_jobs[0].status != "done":  # a finished build whose runs were since removed: offer it again
        st.write("Building the embedded demo: a tiny GPT-2 reference, two DPO runs with TRL, all scored (about a minute).")
        job_panel(root, demo_jobs[0].id)
    elif st.button("Build the embedded demo", type="primary"):
        jobs.start(root, jobs.demo_argv(root), kind="demo")
        st.rerun()


def job_label(job: jobs.JobInfo, now: float | None = None) -> str:
    """The job's one-line status: "score job `id`: **running** · score · 120/512 · ETA 9 s". The stage
    shows only while running (a job whose last stage was "done" but whose wrapper has not yet
    written its exit status reads "running · 512/512", never "running · done")."""
    label = f"{job.kind} job `{job.id}`: **{job.status}**"
    if job.stage and job.status == "running" and job.stage != "done":
        label += f" · {html.escape(job.stage)}"
    if job.done is not None and job.total:
        label += f" · {job.done}/{job.total}"
    if job.paused_s >= 0.05:
        label += f" · held {job.paused_s:.1f} s for page draws"
    if job.eta_s is not None:
        label += f" · ETA {job.eta_s:.0f} s"
    elif job.status == "running":
        label += f" · {(now or time.time()) - job.created:.0f} s elapsed"
    return label


@st.fragment(run_every=1.0)
def job_panel(root: str, job_id: str) -> None:
    """Progress, ETA, log and cancel/restart for one background job; polls every second."""
    job = jobs.info(root, job_id)
    if job is None:
        st.warning(f"Job {job_id} not found.")
        return
    label = job_label(job)
    st.progress(job.fraction if job.fraction is not None else (1.0 if job.status == "done" else 0.0), text=label)
    if job.status == "failed":
        st.error(job.error or "failed")
    if job.cold_start:
        st.caption(f"Started in a new process: {job.cold_start}. Its imports and model loading "
                   "add a few seconds that a job in the dashboard's warm process does not pay.")
    c1, c2 = st.columns(2)
    if job.status == "running" and c1.button("Cancel", key=f"cancel-{job.id}"):
        jobs.cancel(root, job.id)
    if job.status in ("failed", "cancelled", "interrupted") and c2.button("Run again (resumes)", key=f"again-{job.id}"):
        jobs.restart(root, job.id)
        st.rerun(scope="app")
    # Drawn only while open: the panel redraws every second, and a collapsed expander's content is
    # still sent and mounted each time (browser CPU taken from the job it reports on).
    log = drill_down("Log", key=f"log-{job.id}", expanded=job.status == "failed")
    if log is not None:
        log.code(job.log_tail or "(no output yet)", language=None)
    seen = st.session_state.setdefault("_did_jobs_seen", {})
    if seen.get(job.id) == "running" and job.status == "done":  # its run.json is new: the views re-read it
        seen[job.id] = job.status
        st.rerun(scope="app")
    seen[job.id] = job.status


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


# --- token colouring -------------------------------------------------------------------------

COLOUR_BY = {"log_ratio": "log-ratio log π/π_ref", "did_entropy": "DID entropy H_t", "logp": "log-prob log π",
             "top1_prob": "top-1 probability", "token_entropy": "next-token entropy"}
SQUEEZING_COLOURS = ("top1_prob", "token_entropy")
"""Colourings by the checkpoint's own next-token distribution (squeezing; exact numerics only)."""

COLOUR_CAPTION = {
    "log_ratio": "Blue: the checkpoint raised the token's log-prob over the reference (log π − log π_ref > 0); "
                 "red: lowered; white: unchanged.",
    "did_entropy": "Purple: the DID at this position, q_t = softmax(log π − log π_ref) over the vocabulary, is "
                   "spread out (high H_t); white: peaked on a few tokens (H_t near 0).",
    "logp": "Orange: the checkpoint finds the token unlikely (log π far below 0); white: near-certain (log π near 0).",
    "top1_prob": "Green: at this position the checkpoint puts most of its next-token probability on one token "
                 "(max_v π(v | x, y_<t) near 1: a squeezed, peaked distribution); white: no token stands out "
                 "(near 0). The scale is fixed from 0 to 1.",
    "token_entropy": "Teal: the checkpoint's next-token distribution at this position is spread out (high "
                     "entropy −Σ_v π(v|·) log π(v|·), in nats); white: peaked on one token (entropy near 0).",
}
"""What each colouring means, said under the tokens (the page shows the one that matches the colours)."""

PAGE_BACKGROUND = (255, 255, 255)
"""Streamlit's light-theme background (#ffffff; .streamlit/config.toml sets base = "light"). Token
colours are this blended with a full-strength colour and sent opaque, and each token gets black or
white text, whichever contrasts more with its own background: readable whatever the page behind it
(a user can still switch Streamlit to its dark theme, #0e1117, from the settings menu)."""

_FULL_COLOUR = {  # the colour at |value| = scale; the scale runs from the page background to it
    ("log_ratio", 1): (33, 102, 172),    # raised: blue
    ("log_ratio", -1): (178, 24, 43),    # lowered: red
    ("did_entropy", 1): (118, 42, 131),  # purple
    ("logp", 1): (230, 85, 13),          # orange: logp ≤ 0, darker = less likely
    ("top1_prob", 1): (35, 139, 69),     # green: a probability in [0, 1], darker = more peaked
    ("token_entropy", 1): (1, 133, 113),  # teal: entropy ≥ 0 (nats), darker = more spread out
}


def _relative_luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour (0–255 channels)."""
    def linear(c: int) -> float:
        c8 = c / 255
        return c8 / 12.92 if c8 <= 0.04045 else ((c8 + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG 2.x contrast ratio (L_light + 0.05) / (L_dark + 0.05), in [1, 21]."""
    la, lb = sorted((_relative_luminance(a), _relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def token_colour(value: float, scale: float, kind: str) -> tuple[int, int, int] | None:
    """The opaque background of a token whose `kind` value is `value` (None: no value, no colour).

    |value|/scale (clipped to 1) blends PAGE_BACKGROUND towards the mode's full colour; log-ratios
    are blue above 0 and red below.
    """
    if not math.isfinite(value) or scale <= 0:
        return None
    t = max(-1.0, min(1.0, value / scale))
    full = _FULL_COLOUR[(kind, -1 if t < 0 else 1)] if kind == "log_ratio" else _FULL_COLOUR[(kind, 1)]
    w = abs(t)
    return tuple(round(bg + w * (c - bg)) for bg, c in zip(PAGE_BACKGROUND, full, strict=True))  # type: ignore[return-value]


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with `background`: one of them always reaches
    √21 ≈ 4.58:1, above WCAG AA's 4.5:1 for normal text."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast_ratio(background, black) >= contrast_ratio(background, white) else white


def _rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def _rgba(value: float, scale: float, kind: str) -> str:
    """The CSS `background:…;color:…` of one token (no value: transparent, the theme's own text colour)."""
    bg = token_colour(value, scale, kind)
    if bg is None:
        return "background:transparent"
    return f"background:{_rgb(bg)};color:{_rgb(text_colour(bg))}"


def colour_scale(tokens: pd.DataFrame, colour_by: str) -> float:
    """The largest |value| of `colour_by` over `tokens` (0 when none is finite): pass the same one to
    every `tokens_html` call of a view, so one colour means one value in chosen and rejected alike."""
    if tokens.empty or colour_by not in tokens:
        return 0.0
    vals = tokens[colour_by].to_numpy(dtype=float)
    finite = vals[[math.isfinite(x) for x in vals]]
    if colour_by == "top1_prob":  # a probability: one fixed scale, so checkpoints and pairs compare
        return 1.0 if finite.size else 0.0
    return float(max(abs(finite.min()), abs(finite.max()))) if finite.size else 0.0


def colour_legend_html(colour_by: str, scale: float, steps: int = 9) -> str:
    """A row of `steps` swatches from one end of the scale to the other, each labelled with its value
    (in its own readable text colour), between the ends' meanings."""
    if scale <= 0:
        return "<div style='color:grey'>(no values to colour by)</div>"
    lo, hi, left, right = {
        "log_ratio": (-scale, scale, "lowered", "raised"),
        "did_entropy": (0.0, scale, "peaked DID", "spread-out DID"),
        "logp": (0.0, -scale, "likely", "unlikely"),
        "top1_prob": (0.0, scale, "spread out", "peaked (squeezed)"),
        "token_entropy": (0.0, scale, "peaked", "spread out"),
    }[colour_by]
    cells = []
    for k in range(steps):
        value = lo + (hi - lo) * k / (steps - 1)
        number = f"{value:+.2f}" if colour_by == "log_ratio" else f"{value + 0.0:.2f}"  # + 0.0: no "-0.00"
        cells.append(f"<span style=\"{_rgba(value, scale, colour_by)};padding:1px 6px;border-radius:3px\">"
                     f"{number}</span>")
    label = html.escape(COLOUR_BY[colour_by])
    return (f"<div style='font-family:monospace;font-size:0.85em;line-height:2'>{label}: {left} "
            + "".join(cells) + f" {right}</div>")


def tokens_html(tokens: pd.DataFrame, colour_by: str, scale: float | None = None) -> str:
    """Tokens as coloured spans with exact values in the hover title. Every piece of dataset text
    is escaped; only numbers and our own markup are unescaped. `scale` (default: these tokens'
    largest |value|, `colour_scale`) is the value drawn at full colour."""
    if tokens.empty or colour_by not in tokens:
        return "<div style='color:grey'>(no tokens stored)</div>"
    vals = tokens[colour_by].to_numpy(dtype=float)
    scale = colour_scale(tokens, colour_by) if scale is None else scale
    spans = []
    for row, value in zip(tokens.itertuples(index=False), vals, strict=True):
        piece = html.escape(str(row.token), quote=True).replace("\n", "↵<br>") or "∅"
        tip = " | ".join(f"{k} {getattr(row, k):.4f}" for k in ("logp", "ref_logp", "log_ratio", "did_entropy",
                                                                 "top1_prob", "ref_top1_prob", "token_entropy",
                                                                 "ref_token_entropy")
                         if hasattr(row, k) and isinstance(getattr(row, k), float) and math.isfinite(getattr(row, k)))
        tip = html.escape(f"#{row.position} id {row.token_id} {str(row.token)!r} | {tip}", quote=True)
        spans.append(f"<span title=\"{tip}\" style=\"{_rgba(value, scale, colour_by)};"
                     f"border-radius:3px;padding:1px 1px;white-space:pre-wrap\">{piece}</span>")
    return "<div style='font-family:monospace;line-height:1.9'>" + "".join(spans) + "</div>"
