"""Runs: the workspace's runs as a sweep table (settings, final numbers; select rows to line runs up),
and per checkpoint of the picked run the paper's headline numbers."""

from __future__ import annotations

import streamlit as st

from did_ui import audit_view, crossrun, data, job_panel, jobs, live, picker, run_info, score_form, widgets

widgets.start_page("runs")
root = data.workspace_root()
runs = data.run_names(root, data.version(root))
if not runs:
    jobs.start_demo_once(root)  # an empty workspace's first visitor starts the demo build, once
    job_panel.demo_panel(root)
    widgets.end_page()

v = picker.view()
live.follow(v)  # a live run: reruns when it gains a step
assert v is not None
job_panel.demo_still_building(root, v.run)  # the demo's first runs are in; the rest still train

st.caption("One row per run: its settings with where each came from (trainer, default or override), its last "
           "checkpoint's numbers and sparklines over steps. Select rows to line runs up.")
crossrun.sweep_view(v)

st.subheader(f"Checkpoints of {widgets.md_literal(v.run)}")
run_info.run_notes(v)
st.caption("Accuracy: share of pairs with reward margin > 0 (M_π > M_ref). Displaced: both d(y_w) < 0 and "
           "d(y_l) < 0 (chosen and rejected likelihoods both fell). Loss: the trainer's own loss type "
           f"({widgets.md_literal(data.run_settings(root, v.run, v.ver).settings.loss_label())}). DID entropy: "
           "token-level estimator, mean over tokens. " + run_info.numerics_caption(v))
summary = data.summary(root, v.run, v.ver)
pct = st.column_config.ProgressColumn
small = {"width": "small"}
widgets.table(summary, column_config={
    "step": st.column_config.NumberColumn("step", **small),
    "accuracy": pct("accuracy", format="%.3f", min_value=0, max_value=1, **small),
    "displaced share": pct("displaced", format="%.3f", min_value=0, max_value=1, **small,
                           help="share of pairs whose chosen and rejected log-likelihoods both fell"),
    "mean log-margin": st.column_config.NumberColumn("log-margin", format="%.3f", help="mean M_π", **small),
    "mean reward margin": st.column_config.NumberColumn("reward margin", format="%.4f", help="mean β(M_π − M_ref)",
                                                        **small),
    "loss": st.column_config.NumberColumn("loss", format="%.4f", help="mean of the trainer's own loss", **small),
    "mean DID entropy (chosen)": st.column_config.NumberColumn("DID H, chosen", format="%.3f", **small,
                                                               help="mean token-level DID entropy, chosen"),
    "mean DID entropy (rejected)": st.column_config.NumberColumn("DID H, rejected", format="%.3f", **small,
                                                                 help="mean token-level DID entropy, rejected"),
    "reward margin histogram": st.column_config.BarChartColumn("reward margins", width="medium",
                                                               help="histogram of per-pair reward margins"),
})

params = {"run": v.run, "ckpt": v.ckpt or ""}
cols = st.columns(6)
for col, (key, label) in zip(cols, [("curves", "Training curves"), ("margins", "Log-margins"), ("entropy", "DID entropy"),
                                    ("compare", "Compare"), ("example", "Example"), ("score", "Score more")], strict=True):
    with col:
        st.page_link(widgets.PAGES[key], label=label, query_params=params)

st.subheader("Settings")
st.caption("Each value is the trainer's (read from the run folder), a documented default (no run folder, or "
           "the run does not record it), or an override given when scoring.")
widgets.table(score_form.settings_table(data.run_settings(root, v.run, v.ver)))
run_info.precision_audit(v)
audit_view.tokenization_audit(v)

st.subheader("Export")
widgets.export_buttons(v)
with st.expander("run.json"):
    st.json({k: val for k, val in v.manifest.to_json().items() if k != "trainer_log_history"}, expanded=False)
