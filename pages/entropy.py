"""DID entropy: how peaked the differential information q_{π/π_ref} is, per checkpoint and per
estimator, and how it relates to log-likelihood displacement."""

from __future__ import annotations

import streamlit as st

from did_core.entropy import RELIABLE_ESS, SNIS_MEASURED_COVERAGE
from did_ui import crossrun, data, figures, job_argv, job_panel, jobs, live, picker, run_info, selection, views, widgets

widgets.start_page("entropy")
v = picker.view()
live.follow(v)  # a live run: reruns when it gains a step
if v is None or v.ckpt is None:
    widgets.end_page()
run_info.page_notes(v)
lined = crossrun.lined_up(v)

st.caption("The paper's diagnostic: a low-entropy DID reinforces the policy (mass concentrates), a "
           "high-entropy DID smooths it. Every figure says which estimator it shows.")
estimators = data.entropy_estimators(v.root, v.run, v.ver)
estimator = st.radio("Estimator", list(estimators), format_func=lambda k: estimators[k]["label"], horizontal=True,
                     key="entropy_estimator")
spec = estimators[estimator]
st.latex(spec["formula"])
st.caption(spec["note"])

ckpts = data.checkpoints(v.root, v.run, v.ver)
shown = st.multiselect("Checkpoints", ckpts, default=ckpts, key="entropy_ckpts")
panels = [(f"{spec['label']}: {side}", data.entropy_histogram(v.root, v.run, v.ver, estimator, column))
          for column, side in ((spec["chosen"], "chosen y_w"), (spec["rejected"], "rejected y_l")) if column is not None]
# theme=None: the figure's own plotly_white template. With Streamlit's theme this two-panel, 2×20-trace
# figure took ~1 s more to draw in Chromium (60,000 pairs × 20 checkpoints, 54 kB of spec: a repeat load
# 1.9–2.4 s, 1.0 s without the theme); the same figure drawn by plotly.js alone takes ~0.1 s.
st.plotly_chart(figures.histogram_panels(panels, "entropy (nats)", only=shown), key="entropy-hist", theme=None)

if lined:
    st.subheader("DID entropy per checkpoint, runs overlaid")
    st.caption(crossrun.overlay_caption(v, lined) + " Token-level (when scored): median and 25–75 % of pairs; "
               "S = {y_w, y_l}: mean over pairs; exact: mean over prompts, where a run's responses can be enumerated "
               "(the demo).")
    st.plotly_chart(figures.run_overlay(crossrun.entropy_panels(v, lined), lined), key="entropy-overlay")

by_step = data.sequence_entropy_by_step(v.root, v.run, v.ver)
if by_step.empty:
    with st.expander("Sequence-level DID entropy from K samples (the paper's estimator)"):
        st.caption("Samples K responses per prompt from the checkpoint, scores them under it and the reference, and "
                   "estimates H(q) with bootstrap intervals (`python -m did_core sample`, in the background).")
        c1, c2 = st.columns(2)
        k = c1.select_slider("K samples per prompt", [8, 16, 32, 64, 128], value=32, key="entropy_k")
        limit = c2.select_slider("Prompts", [16, 32, 64, 128, 256], value=64, key="entropy_limit")
        if st.button("Sample now", key="entropy_sample"):
            argv = job_argv.sample_argv(v.root, v.run, [v.ckpt], k=k, limit=limit)
            st.session_state["entropy_job"] = jobs.start(v.root, argv, kind="sample")
        if st.session_state.get("entropy_job"):
            job_panel.job_panel(v.root, st.session_state["entropy_job"])
else:
    st.subheader("Sequence-level, over the whole response space")
    st.latex(r"q(y) = \frac{\pi(y\mid x)/\pi_{\mathrm{ref}}(y\mid x)}{\sum_{y'}\pi(y'\mid x)/\pi_{\mathrm{ref}}(y'\mid x)},"
             r"\qquad \hat H_{\mathrm{SNIS}} = -\sum_{k=1}^K \tilde\omega_k \log\hat q(y_k),\ "
             r"y_k\sim\pi,\ \tilde\omega_k \propto \frac{q(y_k)}{\pi(y_k\mid x)}")
    low, high = SNIS_MEASURED_COVERAGE
    st.caption("Estimator 3 (exact: this run's responses can be enumerated) beside estimator 2 with K samples from "
               "the checkpoint, with 95 % intervals (SNIS: studentised m-out-of-n bootstrap, not calibrated: on 24 "
               f"enumerable test cases it covered the exact value {low:.0%}–{high:.1%} of the time; H over the sample "
               "set: percentile bootstrap) and each point's mean effective sample size (Σw)²/Σw²; a point drawn grey "
               f"and marked low has a mean ESS below {RELIABLE_ESS:g}, too few to trust its interval. SNIS estimates "
               "the entropy over the sampler's whole support (responses cut at the length limit included), so compare it with that exact line; "
               "H over the sample set grows with K and is bounded by log K. The dashed line is the target DID's "
               "entropy.")
    st.plotly_chart(figures.estimator_lines(by_step, views.SEQUENCE_ESTIMATORS), key="entropy-sequence")
    means = widgets.drill_down("Per checkpoint (means over prompts)", key="entropy_sequence_table")
    if means is not None:
        means.dataframe(by_step, hide_index=True)

st.subheader("Relation to displacement")
st.caption("Displaced pair: d(y_w) < 0 and d(y_l) < 0. Mean entropy of displaced and other pairs per checkpoint, "
           "and, for the selected checkpoint, each pair's entropy against the chosen response's log-ratio (below, "
           "drawn once opened).")
relation = data.entropy_vs_displacement(v.root, v.run, v.ver, estimator)
if relation.empty:
    st.info("No entropy values for this estimator.")
else:
    st.plotly_chart(figures.lines(relation, "step", [c for c in relation.columns if c not in ("step", "checkpoint")],
                                  "Mean DID entropy: displaced vs other pairs", "entropy (nats)"), key="entropy-displacement")
    pairs = widgets.pair_drill_down(v, f"entropy against d(y_w) at {widgets.md_literal(v.ckpt)}; click a point to "
                                       "open that pair", "entropy_pairs")
    if pairs is not None:
        with pairs:
            rows = data.entropy_rows(v.root, v.run, v.ver, estimator, v.ckpt)
            event = widgets.pair_chart(figures.pair_scatter(rows, "log_ratio_chosen", "entropy",
                                                            f"{v.ckpt}: entropy vs d(y_w)", "d(y_w) = log π/π_ref (chosen)",
                                                            "entropy", colour="log_ratio_rejected", diagonal=False),
                                       "entropy-scatter")
            picked = selection.pair_id_from_selection(event, data.pair_ids(v.root, v.run, v.ver))
        if picked is not None:
            picker.open_example(v, picked)
