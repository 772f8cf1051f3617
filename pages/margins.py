"""Log-margins: per-example M_π against M_ref, their histograms, the paper's ordering shares, and
the power-law fit. Selecting points opens the example inspector."""

from __future__ import annotations

import streamlit as st

from did_ui import data, figures, selection, widgets

widgets.ensure_router()
st.title("Log-margins")
v = widgets.view()
if v is None or v.ckpt is None:
    st.stop()

aggregation = st.segmented_control("Aggregation", ["sum", "mean"], default="sum", key="margins_agg",
                                   format_func=lambda a: {"sum": "sequence sum", "mean": "per-token mean"}[a]) or "sum"
st.latex(r"M_\pi = \log \pi(y_w\mid x) - \log \pi(y_l\mid x), \qquad "
         r"\text{accuracy} = \Pr[M_\pi > M_{\mathrm{ref}}]")

rows = data.checkpoint_rows(v.root, v.run, v.ver, v.ckpt, aggregation)
colour = st.selectbox("Colour points by", ["reward_margin", "log_ratio_chosen", "log_ratio_rejected",
                                           "did_entropy_chosen", "dpo_loss"], key="margins_colour")
event = st.plotly_chart(
    figures.pair_scatter(rows, "ref_log_margin", "log_margin", f"{v.ckpt}: checkpoint vs reference log-margin "
                         f"({len(rows):,} pairs; select points to inspect)", "M_ref", f"M_π ({v.ckpt})", colour=colour),
    key="margin_scatter", on_select="rerun", selection_mode=("points", "box", "lasso"))
picked = selection.pair_ids_from_selection(event)
valid = data.pair_ids(v.root, v.run, v.ver)
picked = [p for p in picked if p in valid]
if picked:
    st.write(f"{len(picked)} pair(s) selected.")
    if len(picked) == 1:
        widgets.open_example(v, picked[0])
    choice = st.selectbox("Open one in the inspector", picked[:500], key="margins_pick")
    if st.button("Open example", type="primary"):
        widgets.open_example(v, choice)

hist = data.histograms(v.root, v.run, v.ver, "log_margin", aggregation)
ref = data.ref_margin_histogram(v.root, v.run, v.ver, aggregation)
ckpts = data.checkpoints(v.root, v.run, v.ver)
shown = st.multiselect("Checkpoints in the histogram", ckpts, default=ckpts, key="margins_hist_ckpts")
st.plotly_chart(figures.histogram_overlay(hist, "Log-margin distribution per checkpoint (reference dashed)", "log-margin",
                                          extra=ref, only=shown), key="margin_hist")

st.subheader("Ordering shares")
st.caption("With checkpoint k standing for π* (DESIGN.md §2). Consecutive checkpoints: the ordering "
           "M_k > M_k−1 > M_ref is the paper's log-margin ordering with k−1 in place of the policy.")
st.dataframe(data.ordering(v.root, v.run, v.ver), hide_index=True)

st.subheader("Power-law fit")
fit = data.power_law(v.root, v.run, v.ver, v.ckpt)
if fit is None:
    st.info("The fit of M_ref − M_l against β·(M_π − M_ref) needs a model of the rejected-response generator (π_l) "
            "scored on the same data. Score one with the reference and add it to the run to see the fit here.")
else:
    c1, c2, c3 = st.columns(3)
    c1.metric("slope β̂", f"{fit['slope']:.4g}")
    c2.metric("trainer β", f"{v.manifest.get('beta', float('nan'))}")
    c3.metric("R²", f"{fit['r2']:.3f}")
    st.plotly_chart(figures.pair_scatter(fit["rows"], "x", "y", "Power-law condition: M_ref − M_l vs M_π − M_ref",
                                         "M_π − M_ref", "M_ref − M_l", diagonal=False, slope=fit["slope"]),
                    key="power_law")
