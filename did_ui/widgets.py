"""Layout helpers shared by the pages: the run/checkpoint picker bound to the URL, empty states,
the background-job progress panel, export buttons and the token colouring.

Dataset text is never interpreted: token pieces go through `html.escape` before any HTML is
built, and whole prompts/responses are shown with `st.text`/`st.code`.
"""

from __future__ import annotations

import html
import importlib.util
import math
import os
import re
import time
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from did_ui import data, jobs, selection

PAGES = {
    "runs": "pages/runs.py", "score": "pages/score.py", "curves": "pages/curves.py", "margins": "pages/margins.py",
    "entropy": "pages/entropy.py", "compare": "pages/compare.py", "example": "pages/example.py", "lab": "pages/lab.py",
}
_REMEMBER = "_did_view"


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
    names; /runs is a hidden page that opens Runs, the default page at /), even when another session flipped the
    switch meanwhile (tests/test_browser.py opens several deep links at once on a fresh server).
    Under app.py, ROUTED is set before the page runs, so the page just runs.
    """
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
    if not st.session_state.get(ROUTED):
        st.rerun()


@dataclass(frozen=True)
class View:
    """The validated selection a page shows, plus the cache keys it reads with."""

    root: str
    ver: str
    run: str
    ckpt: str | None
    a: str | None
    example: str | None
    manifest: dict


def _pick(label: str, key: str, param: str, options: list[str], value: str | None) -> str | None:
    """A sidebar selectbox whose value lives in the URL (`param`) as well as the session."""
    if not options:
        return None
    st.session_state[key] = value if value in options else options[0]

    def to_url() -> None:
        st.query_params[param] = st.session_state[key]
        st.session_state.setdefault(_REMEMBER, {})[param] = st.session_state[key]

    return st.sidebar.selectbox(label, options, key=key, on_change=to_url)


def view(need_a: bool = False) -> View | None:
    """Resolve run / checkpoint / example from the URL (then the session), draw the sidebar
    pickers, write the choice back to the URL; None (with an empty state drawn) when there are no runs."""
    root = data.workspace_root()
    runs = data.run_names(root, data.version(root))
    if not runs:
        no_runs(root)
        return None
    remembered = st.session_state.setdefault(_REMEMBER, {})
    state = selection.resolve_state(st.query_params.to_dict(), remembered, runs,
                                    lambda r: data.checkpoints(root, r, data.run_version(root, r)),
                                    lambda r: data.pair_ids(root, r, data.run_version(root, r)))
    run = _pick("Run", "pick_run", "run", runs, state.run)
    assert run is not None
    ver = data.run_version(root, run)
    ckpts = data.checkpoints(root, run, ver)
    a = _pick("Compare from checkpoint A", "pick_a", "a", ckpts, state.a) if need_a else None
    ckpt = _pick("Checkpoint" + (" B" if need_a else ""), "pick_ckpt", "ckpt", ckpts, state.ckpt)
    example = state.example if run == state.run else None
    chosen = selection.ViewState(run=run, ckpt=ckpt, a=a, example=example)
    keys = ("run", "ckpt", "a", "example") if need_a else ("run", "ckpt", "example")
    for key, value in selection.to_query_params(chosen, keys).items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value
    remembered.update(selection.to_query_params(chosen, keys))
    manifest = data.run_manifest(root, run, ver)
    st.sidebar.caption(f"Workspace {md_literal(root)} · β = {md_literal(manifest.get('beta', '?'))} · "
                       f"{md_literal(manifest.get('dataset', {}).get('n_pairs', '?'))} pairs · reference "
                       f"{md_literal(manifest.get('reference', {}).get('name', '?'))}")
    return View(root=root, ver=ver, run=run, ckpt=ckpt, a=a, example=example, manifest=manifest)


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


def _env_count(name: str, default: int) -> int:
    """A whole number >= 0 from the environment; `default` when unset or not one."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


INLINE_PAIRS = _env_count("DID_INLINE_PAIRS", 1000)
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
    """Switch to the inspector for `pair_id` (a validated id of `v.run`)."""
    params = {"run": v.run, "ckpt": ckpt or v.ckpt or "", "example": pair_id}
    st.session_state.setdefault(_REMEMBER, {}).update(params)
    st.query_params.update(params)  # also for this session's own rerun (AppTest keeps these)
    st.switch_page(PAGES["example"], query_params=params)


def demo_supported() -> bool:
    """Whether this checkout has the demo builder and its command line."""
    return all(importlib.util.find_spec(m) is not None for m in ("did_core.demo", "did_core.__main__"))


def no_runs(root: str) -> None:
    """What a page shows when the workspace has no scored runs."""
    st.info(f"No scored runs in the workspace `{root}` yet. The **Runs** page builds the embedded demo; "
            "the **Score** page scores your own dataset and checkpoints.")
    st.page_link(PAGES["runs"], label="Open Runs", icon=":material/table_view:")


def demo_panel(root: str) -> None:
    """Empty workspace on Runs: start (once, automatically) or show the demo build."""
    st.subheader("This workspace has no runs yet")
    if not demo_supported():
        st.info(f"Workspace: `{root}`. Score a dataset on the **Score** page, or from a shell:\n\n"
                f"`python -m did_core score --data DATA --ref REFERENCE --run TRL_OUTPUT_DIR --workspace {root}`\n\n"
                "The embedded demo builder (`python -m did_core demo`) is not available in this checkout yet.")
        st.page_link(PAGES["score"], label="Score a dataset", icon=":material/play_arrow:")
        return
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


@st.fragment(run_every=1.0)
def job_panel(root: str, job_id: str) -> None:
    """Progress, ETA, log and cancel/restart for one background job; polls every second."""
    job = jobs.info(root, job_id)
    if job is None:
        st.warning(f"Job {job_id} not found.")
        return
    label = f"{job.kind} job `{job.id}`: **{job.status}**"
    if job.stage:
        label += f" · {html.escape(job.stage)}"
    if job.done is not None and job.total:
        label += f" · {job.done}/{job.total}"
    if job.eta_s is not None:
        label += f" · ETA {job.eta_s:.0f} s"
    elif job.status == "running":
        label += f" · {time.time() - job.created:.0f} s elapsed"
    st.progress(job.fraction if job.fraction is not None else (1.0 if job.status == "done" else 0.0), text=label)
    if job.status == "failed":
        st.error(job.error or "failed")
    c1, c2 = st.columns(2)
    if job.status == "running" and c1.button("Cancel", key=f"cancel-{job.id}"):
        jobs.cancel(root, job.id)
    if job.status in ("failed", "cancelled", "interrupted") and c2.button("Run again (resumes)", key=f"again-{job.id}"):
        jobs.restart(root, job.id)
        st.rerun(scope="app")
    with st.expander("Log"):
        st.code(job.log_tail or "(no output yet)", language=None)
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

COLOUR_BY = {"log_ratio": "log-ratio log π/π_ref", "did_entropy": "DID entropy H_t", "logp": "log-prob log π"}


def _rgba(value: float, scale: float, kind: str) -> str:
    if not math.isfinite(value) or scale <= 0:
        return "transparent"
    t = max(-1.0, min(1.0, value / scale))
    if kind == "log_ratio":  # blue: the checkpoint raised this token; red: lowered
        return f"rgba(33,102,172,{t:.3f})" if t >= 0 else f"rgba(178,24,43,{-t:.3f})"
    if kind == "did_entropy":
        return f"rgba(118,42,131,{abs(t):.3f})"
    return f"rgba(230,85,13,{abs(t):.3f})"  # logp ≤ 0: darker = less likely


def tokens_html(tokens: pd.DataFrame, colour_by: str) -> str:
    """Tokens as coloured spans with exact values in the hover title. Every piece of dataset text
    is escaped; only numbers and our own markup are unescaped."""
    if tokens.empty or colour_by not in tokens:
        return "<div style='color:grey'>(no tokens stored)</div>"
    vals = tokens[colour_by].to_numpy(dtype=float)
    finite = vals[[math.isfinite(x) for x in vals]]
    scale = float(max(abs(finite.min()), abs(finite.max()))) if finite.size else 0.0
    spans = []
    for row, value in zip(tokens.itertuples(index=False), vals, strict=True):
        piece = html.escape(str(row.token), quote=True).replace("\n", "↵<br>") or "∅"
        tip = " | ".join(f"{k} {getattr(row, k):.4f}" for k in ("logp", "ref_logp", "log_ratio", "did_entropy")
                         if hasattr(row, k) and isinstance(getattr(row, k), float) and math.isfinite(getattr(row, k)))
        tip = html.escape(f"#{row.position} id {row.token_id} {str(row.token)!r} | {tip}", quote=True)
        spans.append(f"<span title=\"{tip}\" style=\"background:{_rgba(value, scale, colour_by)};"
                     f"border-radius:3px;padding:1px 1px;white-space:pre-wrap\">{piece}</span>")
    return "<div style='font-family:monospace;line-height:1.9'>" + "".join(spans) + "</div>"
