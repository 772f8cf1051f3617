"""Live runs on the dashboard: the "live" mark, and pages that follow a run while it trains.

A live run (did_core/live_run.py, written by did_core.callback.DIDCallback) gains a checkpoint
`step-N` at each evaluation and rewrites its run.json last. Every cached table keys on that file
(`data.view_version` → `data.run_version`: mtime, inode, size), so a new step invalidates them by
itself; what a page needs is to rerun when it happens, without the user reloading. `follow(v)` draws
a one-line status and a fragment that stats run.json every `POLL_S` seconds and calls `st.rerun()`
only when the file changed: one `stat` per poll while nothing changes, no table read, nothing drawn.
A run that is not live gets neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import streamlit as st

from did_ui import data

if TYPE_CHECKING:
    from did_core.manifest import RunManifest
    from did_ui.picker import View


def _poll_seconds() -> float:
    """`DID_LIVE_POLL_S` (default 2 s; at least 0.2)."""
    try:
        return max(0.2, float(os.environ.get("DID_LIVE_POLL_S", "2")))
    except ValueError:
        return 2.0


POLL_S = _poll_seconds()
MARK = "live"
STOPPED = "stopped"


def is_live(manifest: RunManifest) -> bool:
    """Whether the run is being written by a training job now: run.json says `live` and its writer
    is not known to be gone (`RunManifest.writer_gone`: a killed job leaves `live` true)."""
    return bool(manifest.live) and not manifest.writer_gone


def label(manifest: RunManifest) -> str:
    """The run's name as tables and pickers show it: `name · live` while it trains, `name · stopped`
    when its training process is gone without finishing."""
    name = manifest.name
    if manifest.writer_gone:
        return f"{name} · {STOPPED}"
    return f"{name} · {MARK}" if is_live(manifest) else name


def run_label(root: str) -> Callable[[str], str]:
    """A selectbox `format_func` over run names: each labelled by `label` (cached manifests)."""
    def fmt(run: str) -> str:
        try:
            return label(data.run_manifest(root, run, data.run_version(root, run)))
        except Exception:  # noqa: BLE001 — a run being rewritten shows its bare name
            return run
    return fmt


def status(manifest: RunManifest) -> str:
    """One line: live, the last step scored, how many, and when run.json was last written."""
    steps = [e.step for e in manifest.checkpoints if e.step is not None]
    last = f"step {max(steps)} ({len(steps)} scored)" if steps else "no step scored yet"
    when = str(manifest.last_write or "?").replace("T", " ")
    return f":red[●] **Live**: training in progress · {last} · last write {when} · this page follows it"


def stopped_status(manifest: RunManifest) -> str:
    """One line for a live run whose training process is gone: what is shown and since when."""
    steps = [e.step for e in manifest.checkpoints if e.step is not None]
    last = f"at step {max(steps)} ({len(steps)} scored)" if steps else "before any step was scored"
    info = manifest.live_info or {}
    when = str(manifest.last_write or "?").replace("T", " ")
    return (f"**Stopped**: the training process that wrote this live run (pid {info.get('pid')}) is gone; it "
            f"ended {last} without finishing (last write {when}). Every step listed is complete; resuming "
            "the training with the callback continues this run.")


def follow(v: View | None) -> None:
    """On a page showing a live run: its status line and a poll that reruns the page on a new step;
    for one whose training process is gone, a warning and no poll."""
    if v is not None and v.manifest.writer_gone:
        st.warning(stopped_status(v.manifest), icon=":material/stop_circle:")
        return
    if v is None or not is_live(v.manifest):
        return
    st.caption(status(v.manifest))
    _poll(v.root, v.run, v.ver.partition(data.NUMERICS_SEP)[0])  # the version this page was drawn from


@st.fragment(run_every=POLL_S)
def _poll(root: str, run: str, seen: str) -> None:
    """Every POLL_S: rerun the whole page when run.json is no longer the one this page was drawn from
    (`data.run_version`: one stat)."""
    if data.run_version(root, run) != seen:
        st.rerun()
