"""DID entropy: how peaked the differential information q_{π/π_ref} is, per checkpoint and per
estimator, and how it relates to log-likelihood displacement."""

from __future__ import annotations

import streamlit as st

from did_ui import data, figures, selection, widgets

widgets.ensure_router()
st.title("DID entropy")
v = widgets.view()
if v is None or v.ckpt is None:
    st.stop()

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
left, right = st.columns(2)
for col, column, side in ((left, spec["chosen"], "chosen y_w"), (right, spec["rejected"], "rejected y_l")):
    if column is None:
        continue
    with col:
        hist = data.entropy_histogram(v.root, v.run, v.ver, estimator, column)
        st.plotly_chart(figures.histogram_overlay(hist, f"{spec['label']}: {side}", "entropy (nats)", only=shown),
                        key=f"entropy-hist-{column}")

st.subheader("Relation to displacement")
st.caption("Displaced pair: d(y_w) < 0 and d(y_l) < 0. Mean entropy of displaced and other pairs per checkpoint, "
           "and, for the selected checkpoint, each pair's entropy against the chosen response's log-ratio.")
relation = data.entropy_vs_displacement(v.root, v.run, v.ver, estimator)
if relation.empty:
    st.info("No entropy values for this estimator.")
else:
    st.plotly_chart(figures.lines(relation, "step", [c for c in relation.columns if c not in ("step", "checkpoint")],
                                  "Mean DID entropy: displaced vs other pairs", "entropy (nats)"), key="entropy-displacement")
    rows = data.entropy_rows(v.root, v.run, v.ver, estimator, v.ckpt)
    event = st.plotly_chart(figures.pair_scatter(rows, "log_ratio_chosen", "entropy", f"{v.ckpt}: entropy vs d(y_w)",
                                                 "d(y_w) = log π/π_ref (chosen)", "entropy", colour="log_ratio_rejected",
                                                 diagonal=False),
                            key="entropy-scatter", on_select="rerun", selection_mode=("points", "box", "lasso"))
    picked = selection.pair_id_from_selection(event, data.pair_ids(v.root, v.run, v.ver))
    if picked is not None:
        widgets.open_example(v, picked)
