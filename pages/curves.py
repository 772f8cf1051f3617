"""Training curves: what happened to chosen and rejected likelihoods over steps, with quantile
bands, beside what the trainer itself logged; several runs overlaid when runs are lined up."""

from __future__ import annotations

import streamlit as st

from did_ui import ches_view, crossrun, data, figures, live, picker, run_info, views, widgets

widgets.start_page("curves")
v = picker.view()
live.follow(v)  # a live run: reruns when it gains a step
if v is None:
    widgets.end_page()
lined = crossrun.lined_up(v)

aggregation = st.segmented_control("Aggregation", ["sum", "mean"], default="sum", key="curves_agg",
                                   format_func=lambda a: {"sum": "sequence sum", "mean": "per-token mean"}[a]) or "sum"
overlay = st.toggle("Overlay the trainer's logged metrics", value=True,
                    help="TRL logs means over its training batches (summed log-probs); ours are over the scored "
                         "dataset with each saved checkpoint. Shown with sequence sums only.")
has_log = any(crossrun.manifest(v, r).trainer_log_history for r in lined or [v.run])
if overlay and not has_log:
    st.caption(f"{'These runs have' if lined else 'This run has'} no trainer log (trainer_state.json) to overlay.")
show_trainer = overlay and has_log and aggregation == "sum"

st.caption(crossrun.overlay_caption(v, lined) + " Band: 25–75 % of pairs; solid: median"
           + ("; dashed: each run's trainer log." if show_trainer else ".") if lined else
           "Bands: 10–90 % and 25–75 % of pairs at each checkpoint; solid: median; dotted: mean; the reference "
           "at step 0. Log-likelihood displacement shows as d(y_w) < 0: the chosen response lost likelihood too. "
           f"Loss: the trainer's ({widgets.md_literal(data.run_settings(v.root, v.run, v.ver).settings.loss_label())}). "
           + run_info.numerics_caption(v))
if show_trainer and not lined:
    st.caption("The trainer's eval metrics are what its own forward gave (in its precision, batch means "
               "averaged over batches); on the same eval set, the trainer numerics reproduce them and the exact "
               "numerics show what rounding moved (the band at the bottom of this page).")
chosen = widgets.remembered_multiselect("Quantities", list(views.CURVE_QUANTITIES), list(views.CURVE_DEFAULTS),
                                        key="curves_quantities", format_func=views.CURVE_QUANTITIES.get)
if lined:  # several runs: per run its median and 25–75 % band, one colour each, its own trainer log dashed
    panels = crossrun.curve_panels(v, lined, aggregation, {m: views.CURVE_QUANTITIES[m] for m in chosen}, show_trainer)
    if panels:
        st.plotly_chart(figures.run_overlay(panels, lined), key="curves-overlay")
    st.plotly_chart(figures.run_overlay(crossrun.curve_panels(v, lined, aggregation, views.SHARE_QUANTITIES, show_trainer),
                                        lined, y_range=(0, 1)), key="shares-overlay")
else:  # the run picked in the sidebar
    panels = []
    for metric, title in ((m, views.CURVE_QUANTITIES[m]) for m in chosen):
        scored, trainer = data.curve_frame(v.root, v.run, v.ver, aggregation, metric)
        if not (scored.empty or "mean" not in scored or scored["mean"].isna().all()):
            panels.append((title, scored, trainer if show_trainer else None))
    if panels:
        st.plotly_chart(figures.band_grid(panels), key="curves-grid")
    elif not chosen:
        st.info("Pick one or more quantities to draw.")

    shares = {m: data.curve_frame(v.root, v.run, v.ver, aggregation, m) for m in views.SHARE_QUANTITIES}
    shares = {m: (s, t if show_trainer else None) for m, (s, t) in shares.items()}
    st.plotly_chart(figures.share_curves(shares, views.SHARE_QUANTITIES), key="shares")

    ches_view.squeezing_section(v)

    per_pair, audit = data.precision_audit(v.root, v.run, v.ver)
    if not audit.empty:
        st.subheader("How much of a logged curve is rounding")
        st.plotly_chart(figures.precision_curves(audit, per_pair), key="curves-audit")

    table = widgets.drill_down("All curves as a table (long format)", key="curves_table")
    if table is not None:
        table.dataframe(data.curves(v.root, v.run, v.ver, aggregation), hide_index=True)
