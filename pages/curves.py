"""Training curves: what happened to chosen and rejected likelihoods over steps, with quantile
bands, beside what the trainer itself logged."""

from __future__ import annotations

import streamlit as st

from did_ui import data, figures, views, widgets

widgets.ensure_router()
st.title("Training curves")
v = widgets.view()
if v is None:
    st.stop()

aggregation = st.segmented_control("Aggregation", ["sum", "mean"], default="sum", key="curves_agg",
                                   format_func=lambda a: {"sum": "sequence sum", "mean": "per-token mean"}[a])
aggregation = aggregation or "sum"
curves = data.curves(v.root, v.run, v.ver, aggregation)
trainer = data.trainer_log(v.root, v.run, v.ver)
overlay = st.toggle("Overlay the trainer's logged metrics", value=True,
                    help="TRL logs batch means of the training batches; ours are over the scored dataset.")
if overlay and trainer.empty:
    st.caption("This run has no trainer log (trainer_state.json) to overlay.")


def trainer_series(quantity: str):
    if not overlay or trainer.empty or aggregation != "sum":
        return None
    for key in views.TRAINER_KEYS.get(quantity, ()):
        if key in trainer and trainer[key].notna().any():
            return trainer[key].dropna().rename(key)
    return None


st.caption("Bands: 10–90 % and 25–75 % of pairs at each checkpoint; solid: median; dotted: mean. "
           "Log-likelihood displacement shows as d(y_w) < 0: the chosen response lost likelihood too.")
available = [q for q in views.CURVE_QUANTITIES if q in set(curves["quantity"])]
left, right = st.columns(2)
for i, quantity in enumerate(available):
    with (left if i % 2 == 0 else right):
        st.plotly_chart(figures.band_curves(curves, quantity, views.CURVE_QUANTITIES[quantity], trainer_series(quantity)),
                        key=f"curve-{quantity}")

shares = data.shares(v.root, v.run, v.ver)
trainer_acc = None
if overlay and not trainer.empty:
    keys = [k for k in views.TRAINER_KEYS["accuracy"] if k in trainer]
    trainer_acc = trainer[keys].dropna(how="all") if keys else None
st.plotly_chart(figures.share_curves(shares, views.SHARE_QUANTITIES, trainer_acc), key="shares")

if not trainer.empty:
    with st.expander("Trainer log (trainer_state.json)"):
        st.dataframe(trainer)
