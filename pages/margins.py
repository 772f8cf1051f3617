"""Log-margins: per-example M_π against M_ref, their histograms, the paper's ordering shares, the
power-law fit, and CHES against the chosen response's displacement. Selecting points opens the
example inspector."""

from __future__ import annotations

import streamlit as st

from did_ui import ches_view, crossrun, data, figures, live, picker, run_info, selection, views, widgets

widgets.start_page("margins")
v = picker.view()
live.follow(v)  # a live run: reruns when it gains a step
if v is None or v.ckpt is None:
    widgets.end_page()
run_info.page_notes(v)
lined = crossrun.lined_up(v)

aggregation = st.segmented_control("Aggregation", ["sum", "mean"], default="sum", key="margins_agg",
                                   format_func=lambda a: {"sum": "sequence sum", "mean": "per-token mean"}[a]) or "sum"
st.latex(r"M_\pi = \log \pi(y_w\mid x) - \log \pi(y_l\mid x), \qquad "
         r"\text{accuracy} = \Pr[M_\pi > M_{\mathrm{ref}}]")

hist = data.histograms(v.root, v.run, v.ver, "log_margin", aggregation)
ref = data.ref_margin_histogram(v.root, v.run, v.ver, aggregation)
ckpts = data.checkpoints(v.root, v.run, v.ver)
shown = st.multiselect("Checkpoints in the histogram", ckpts, default=ckpts, key="margins_hist_ckpts")
st.plotly_chart(figures.histogram_overlay(hist, "Log-margin distribution per checkpoint (reference dashed)", "log-margin",
                                          extra=ref, only=shown), key="margin_hist")

pairs = widgets.pair_drill_down(v, f"M_π at {widgets.md_literal(v.ckpt)} against M_ref; click a point, or box-select "
                                   "several, to inspect them", "margins_pairs")
if pairs is not None:
    with pairs:
        rows = data.checkpoint_rows(v.root, v.run, v.ver, v.ckpt, aggregation)
        colour = st.selectbox("Colour points by", ["reward_margin", "log_ratio_chosen", "log_ratio_rejected",
                                                   "did_entropy_chosen", "loss"], key="margins_colour",
                              format_func=figures.human_name)
        event = widgets.pair_chart(
            figures.pair_scatter(rows, "ref_log_margin", "log_margin", f"{v.ckpt}: checkpoint vs reference log-margin",
                                 "M_ref", f"M_π ({v.ckpt})", colour=colour), "margin_scatter")
        valid = data.pair_ids(v.root, v.run, v.ver)
        picked = [p for p in selection.pair_ids_from_selection(event) if p in valid]
        if picked:
            st.write(f"{len(picked)} pair(s) selected.")
            if len(picked) == 1:
                picker.open_example(v, picked[0])
            choice = st.selectbox("Open one in the inspector", picked[:500], key="margins_pick")
            st.page_link(widgets.PAGES["example"], label="Open example", icon=":material/article:",
                         query_params=picker.example_link_params(v, choice))  # a link: one history entry

st.subheader("Ordering shares")
st.caption("Along the path reference → checkpoints (did_core.paper): M_k > M_ref is the preference accuracy; "
           "M_k > M_k−1 > M_k−2 is the paper's log-margin ordering with c_k as π, c_k−1 as π_ref and c_k−2 as π_l "
           "(— at the first checkpoint, which has only the reference before it).")
if lined:
    st.caption(crossrun.overlay_caption(v, lined))
    st.plotly_chart(figures.run_overlay(crossrun.ordering_panels(v, lined, aggregation), lined, y_range=(0, 1)),
                    key="ordering-overlay")
widgets.table(data.ordering(v.root, v.run, v.ver, aggregation))

st.subheader("Power-law fit")
st.latex(r"M_{\mathrm{ref}} - M_l = \hat\beta\,(M_\pi - M_{\mathrm{ref}})\quad\text{(through the origin)}")
others = [c for c in ckpts if c != v.ckpt]
default = data.pi_l_default(v.root, v.run, v.ver)
options = ["(none)"] + others
pi_l = st.selectbox("Model standing for π_l (the rejected-response generator)", options, key="margins_pi_l",
                    index=options.index(default) if default in options else 0,
                    help="Score a model of whatever generated the rejected responses in the same run to test the "
                         "paper's condition; an earlier checkpoint gives the consecutive analogue.")
if pi_l == "(none)":
    st.info("Choose a model for π_l to fit the line. Without one, the ordering shares above are the test.")
else:
    result = data.power_law(v.root, v.run, v.ver, v.ckpt, pi_l, aggregation)
    fit = result["fit"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("slope β̂", f"{fit['beta_hat']:.4g}", help=f"± {fit['slope_stderr']:.2g} (standard error)")
    c2.metric("trainer β", f"{fit['trainer_beta']}")
    c3.metric("R² (through 0)", f"{fit['r2']:.3f}", help=f"centred R²: {fit['r2_centered']:.3f}")
    c4.metric("ordered share M_π > M_ref > M_l", f"{fit['ordered_share']:.3f}")
    st.markdown(views.power_law_reading(fit))
    fitted = widgets.pair_drill_down(v, "M_ref − M_l against M_π − M_ref, and the fitted line", "margins_power_law")
    if fitted is not None:
        fitted.plotly_chart(figures.pair_scatter(result["rows"], "x", "y", f"Power-law condition: π* = {v.ckpt}, "
                                                 f"π_l = {pi_l}", "M_π − M_ref", "M_ref − M_l", colour="residual",
                                                 diagonal=False, slope=fit["beta_hat"]),
                            key="power_law", config=widgets.SCATTER_CONFIG)

ches_view.ches_section(v, aggregation)
