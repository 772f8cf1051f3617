"""Several runs at once: the runs lined up (`?runs=a,b`: the overlaid curves, Runs' sweep table) and
Compare's A from another run (`?a_run=`), each bound to the URL as the sidebar's pickers are.

Which runs Compare offers is did_core.sweep's rule (the same dataset and reference score); every
number comes from the cached tables in `data`, per run, in the numerics the page shows.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from did_core import sweep
from did_core.manifest import RunManifest
from did_ui import data, live, selection, views, widgets
from did_ui.picker import REMEMBER, View

REMEMBERED = REMEMBER
"""The selection the menu's links carry (picker.page_menu); a cleared `runs` is dropped from it here,
since the menu only ever adds what the URL has."""


def _set_url(values: dict[str, str]) -> None:
    """Set (or, with "", remove) these parameters in one query-string change, if it changes anything,
    and keep the menu's links in step."""
    current = st.query_params.to_dict()
    wanted = {**current, **values}
    new = {k: v for k, v in wanted.items() if v}
    remembered = st.session_state.setdefault(REMEMBERED, {})
    for k, v in values.items():
        if v:
            remembered[k] = v
        else:
            remembered.pop(k, None)
    if new != current:
        st.query_params.from_dict(new)


def all_runs(root: str) -> list[str]:
    return data.run_names(root, data.version(root))


def numerics_for(v: View, run: str) -> str:
    """The numerics `run` is shown in beside the page's: the page's when the run has them, else its primary."""
    have = data.numerics(v.root, run)
    return v.numerics if v.numerics in have else have[0]


def version_of(v: View, run: str) -> str:
    return data.view_version(v.root, run, numerics_for(v, run))


def lined_up(v: View, picker: bool = True) -> list[str]:
    """The runs the URL lines up (`runs=`), each unknown one named in a warning and dropped from the
    URL, with a sidebar multiselect bound to it (`picker`, on workspaces of two runs or more). [] : none."""
    names = all_runs(v.root)
    remembered = st.session_state.setdefault(REMEMBERED, {})
    if remembered.get("_a_run_of") != v.run:  # Compare's A from another run goes with the B run it was picked for
        remembered.pop("a_run", None)
    chosen, warnings = selection.resolve_runs(st.query_params.get("runs"), names)
    widgets.warn_link(warnings)
    if warnings:
        _set_url({"runs": selection.runs_value(chosen)})
    if picker and len(names) > 1:
        st.session_state["pick_runs"] = chosen
        st.sidebar.multiselect("Line up runs", names, key="pick_runs", on_change=_runs_picked,
                               help="Overlay these runs on Training curves, Log-margins and DID entropy, one "
                                    "colour each (the Runs page's sweep table picks them too).")
    return chosen


def _runs_picked() -> None:
    _set_url({"runs": selection.runs_value(st.session_state["pick_runs"])})


def manifest(v: View, run: str) -> RunManifest:
    return data.run_manifest(v.root, run, data.run_version(v.root, run))


def overlay_caption(v: View, runs: list[str]) -> str:
    """What an overlay shows, in one sentence: the runs, their numerics and loss types."""
    parts = [f"{widgets.md_literal(r)} ({numerics_for(v, r)} numerics, loss "
             f"{widgets.md_literal(data.run_settings(v.root, r, version_of(v, r)).settings.loss_label())})" for r in runs]
    return (f"{len(runs)} run(s) overlaid, one colour each: {', '.join(parts)}; the run picked in the sidebar "
            "is drawn alone when none is lined up.")


def curve_panels(v: View, runs: list[str], aggregation: str, metrics: dict[str, str],
                 trainer: bool) -> list[tuple[str, dict]]:
    """One overlay panel per metric (title from `metrics`): {run: (scored stats, trainer values or None)}."""
    panels = []
    for metric, title in metrics.items():
        frames = {}
        for run in runs:
            scored, logged = data.curve_frame(v.root, run, version_of(v, run), aggregation, metric)
            if not scored.empty and "mean" in scored and scored["mean"].notna().any():
                frames[run] = (scored, logged if trainer else None)
        if frames:
            panels.append((title, frames))
    return panels


def _steps(v: View, run: str) -> dict[str, float]:
    summary = data.summary(v.root, run, version_of(v, run))
    return dict(zip(summary["checkpoint"], summary["step"], strict=True))


def ordering_panels(v: View, runs: list[str], aggregation: str) -> list[tuple[str, dict]]:
    """Log-margins' ordering shares per checkpoint, one panel per share, one line per run."""
    tables = {run: data.ordering(v.root, run, version_of(v, run), aggregation) for run in runs}
    return [(title, {run: (views.step_frame(t, column, t["checkpoint"].map(_steps(v, run))), None)
                     for run, t in tables.items()}) for column, title in views.ORDERING_SHARES.items()]


def entropy_panels(v: View, runs: list[str]) -> list[tuple[str, dict]]:
    """DID entropy per checkpoint: the token-level means (bands over pairs) when scored, the pair-level
    sequence entropy (S = {y_w, y_l}, mean over pairs) and, where a run has it (the demo), the exact
    sequence-level entropy (mean over prompts)."""
    panels = curve_panels(v, runs, "sum", {m: views.CURVE_QUANTITIES[m] for m in
                                           ("did_entropy_chosen", "did_entropy_rejected")}, trainer=False)
    pair = {run: (views.pair_entropy_by_step(data.entropy_table(v.root, run, version_of(v, run))), None)
             for run in runs}
    exact = {}
    for run in runs:
        by_step = data.sequence_entropy_by_step(v.root, run, version_of(v, run))
        if "exact_did_entropy" in by_step:
            exact[run] = (views.step_frame(by_step, "exact_did_entropy", by_step["step"]), None)
    return [*panels, (views.ESTIMATORS["pair"]["label"] + ", mean over pairs", pair),
            *([(views.SEQUENCE_ESTIMATORS["exact_did_entropy"], exact)] if exact else [])]


# --- Compare: A from another run ----------------------------------------------------------------

def compare_wants_other_run() -> bool:
    """Whether the URL asks for A from a run other than B's (then Compare draws A's pickers here)."""
    a_run = selection.first_value(st.query_params.get("a_run"))
    return bool(a_run) and a_run != selection.first_value(st.query_params.get("run"))


def comparable(v: View) -> tuple[list[str], dict[str, str]]:
    """(runs Compare offers for A: B's run first, then every run on the same dataset and reference
    score in the page's numerics; {run: why not} for the others)."""
    names = all_runs(v.root)
    return sweep.comparable_runs({n: manifest(v, n) for n in names}, v.run, v.numerics)


def compare_a(v: View, offered: list[str], refused: dict[str, str]) -> tuple[str, str | None]:
    """(A's run, A): the "A from run" picker (the comparable runs only) and, when A's run is not B's,
    A's own picker (the reference or a checkpoint of that run). Values the URL asks for and cannot
    have are named in warnings and corrected in the URL, once."""
    picked, warnings = selection.resolve_runs(st.query_params.get("a_run"), offered, why=refused)
    a_run = picked[0] if picked else v.run
    corrections = {"a_run": a_run if a_run != v.run else ""} if warnings else {}
    if len(offered) > 1:
        st.session_state["pick_a_run"] = a_run
        st.sidebar.selectbox("A from run", offered, key="pick_a_run", on_change=_a_run_picked, args=(v.run,),
                             help="A may be a checkpoint of any run on the same dataset and reference as B's run.")
    a = v.a
    if a_run != v.run or a is None:
        ckpts = data.checkpoints(v.root, a_run, version_of(v, a_run))
        # A's default from another run: its last checkpoint (final against final); in B's run, Compare's own
        res = selection.resolve({"run": a_run, "a": st.query_params.get("a")}, [a_run], lambda _: ckpts,
                                keys=("run", "a"), baselines=lambda c: (views.compare_baselines(c), (
                                    c[-1] if c and a_run != v.run else views.default_baseline(c))))
        warnings += res.warnings
        a = res.state.a
        if res.warnings:
            corrections["a"] = a or ""
        options = views.compare_baselines(ckpts)
        st.session_state["pick_a_other"] = a
        st.sidebar.selectbox(f"Compare from A (of {a_run})", options, key="pick_a_other", on_change=_a_picked,
                             format_func=lambda m: "reference (π_ref)" if m == options[0] else m)
    widgets.warn_link(warnings)
    if corrections:
        _set_url(corrections)
    st.session_state.setdefault(REMEMBERED, {})["_a_run_of"] = v.run
    return a_run, a


def _a_run_picked(b_run: str) -> None:
    a_run = st.session_state["pick_a_run"]
    _set_url({"a_run": "" if a_run == b_run else a_run, "a": ""})  # A: that run's default


def _a_picked() -> None:
    _set_url({"a": st.session_state["pick_a_other"]})


# --- Runs: the sweep table ----------------------------------------------------------------------

def sweep_table(root: str, runs: list[str]) -> pd.DataFrame:
    """One row per run: dataset, reference, its resolved settings with their sources
    (did_core.sweep.settings_row), and its final checkpoint's metrics, with sparklines over steps."""
    rows = []
    for name in runs:
        ver = data.run_version(root, name)
        m, s = data.run_manifest(root, name, ver), data.summary(root, name, ver)
        last = s.iloc[-1] if len(s) else pd.Series(dtype=object)
        rows.append({
            "run": name, "live": live.is_live(m), "dataset": _file_name(m.dataset.source),
            "pairs": m.dataset.n_pairs, "reference": _file_name(m.reference.name),
            **sweep.settings_row(m), "checkpoints": len(s), "overrides": len(m.overrides),
            "final step": last.get("step"), "final accuracy": last.get("accuracy"),
            "final log-margin": last.get("mean log-margin"), "final loss": last.get("loss"),
            "final displaced": last.get("displaced share"), "final DID H (chosen)": last.get("mean DID entropy (chosen)"),
            "accuracy": s["accuracy"].tolist(), "loss": s["loss"].tolist(), "displaced": s["displaced share"].tolist(),
        })
    return pd.DataFrame(rows)


def _file_name(path: object) -> str:
    # file names only: the full paths are in the run.json expander
    return str(path or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def sweep_picked(key: str, runs: list[str]) -> None:
    rows = st.session_state[key]["selection"]["rows"]
    _set_url({"runs": selection.runs_value(runs[i] for i in sorted(rows) if i < len(runs))})


SWEEP_COLUMNS = {
    "live": st.column_config.CheckboxColumn("live", width="small", help="being written by a training job (DIDCallback)"),
    "dataset": st.column_config.TextColumn("dataset", width="small"),
    "reference": st.column_config.TextColumn("reference", width="small"),
    "pairs": st.column_config.NumberColumn("pairs", width="small"),
    "β": st.column_config.NumberColumn("β", width="small"),
    "learning rate": st.column_config.NumberColumn("lr", format="%.2e", width="small",
                                                   help="the trainer's learning rate (its saved arguments)"),
    "checkpoints": st.column_config.NumberColumn("ckpts", width="small", help="checkpoints scored"),
    "overrides": st.column_config.NumberColumn("overrides", width="small", help="settings given instead of the trainer's"),
    "final accuracy": st.column_config.NumberColumn("final accuracy", format="%.3f", width="small"),
    "final log-margin": st.column_config.NumberColumn("final log-margin", format="%.3f", width="small"),
    "final loss": st.column_config.NumberColumn("final loss", format="%.4f", width="small",
                                                help="mean of the trainer's own loss at the last checkpoint"),
    "final displaced": st.column_config.NumberColumn("final displaced", format="%.3f", width="small"),
    "final DID H (chosen)": st.column_config.NumberColumn("final DID H", format="%.3f", width="small",
                                                          help="mean token-level DID entropy, chosen"),
    "accuracy": st.column_config.LineChartColumn("accuracy over steps", y_min=0, y_max=1, width="small"),
    "loss": st.column_config.LineChartColumn("loss over steps", width="small"),
    "displaced": st.column_config.LineChartColumn("displaced share", y_min=0, y_max=1, width="small"),
}


def sweep_view(v: View) -> list[str]:
    """Runs' sweep table, its row selection bound to `runs=`, and links that open the lined-up runs
    overlaid (and Compare across the first two, when they are comparable). Returns the runs lined up."""
    names = all_runs(v.root)
    chosen = lined_up(v, picker=False)
    key = f"sweep_table:{selection.runs_value(chosen)}"  # a new URL selection: a table that starts with it
    widgets.table(sweep_table(v.root, names), column_config=SWEEP_COLUMNS, key=key,
                 on_select=lambda: sweep_picked(key, names), selection_mode="multi-row",
                 selection_default={"selection": {"rows": [names.index(r) for r in chosen]}})
    if not chosen:
        st.caption("Select rows to line runs up: their curves overlaid, one colour each, and Compare across two "
                   "runs on the same dataset and reference.")
        return chosen
    value = selection.runs_value(chosen)
    cols = st.columns(4)
    for col, (page, label) in zip(cols, [("curves", "Training curves, overlaid"), ("margins", "Ordering shares, overlaid"),
                                         ("entropy", "DID entropy, overlaid")], strict=False):
        with col:
            st.page_link(widgets.PAGES[page], label=label, query_params={"run": v.run, "runs": value})
    with cols[3]:
        _compare_link(v, chosen)
    return chosen


def _compare_link(v: View, chosen: list[str]) -> None:
    """A link to Compare with A the first lined-up run's last checkpoint and B the second's."""
    if len(chosen) < 2:
        st.caption("Line up two runs to compare them pair by pair.")
        return
    a_run, b_run = chosen[:2]
    why = sweep.why_not_comparable(manifest(v, b_run), manifest(v, a_run), data.numerics(v.root, b_run)[0])
    if why:
        st.caption(f"No Compare across {widgets.md_literal(a_run)} and {widgets.md_literal(b_run)}: "
                   f"{widgets.md_literal(why)}.")
        return
    a_ckpts = data.checkpoints(v.root, a_run, data.run_version(v.root, a_run))
    b_ckpts = data.checkpoints(v.root, b_run, data.run_version(v.root, b_run))
    st.page_link(widgets.PAGES["compare"], label=f"Compare {widgets.md_literal(a_run)} → {widgets.md_literal(b_run)}", query_params={
        "run": b_run, "ckpt": b_ckpts[-1], "a_run": a_run, "a": a_ckpts[-1]})
