"""What every page says about the numbers it shows: which numerics, what was overridden, what is an
approximation — and the precision audit of a run scored in both numerics. Never silent: each is drawn
where the numbers are (docs/NUMERICS.md)."""

from __future__ import annotations

import streamlit as st

from did_core.run_settings import NUMERICS_LABEL
from did_ui import data, figures, widgets


def numerics_caption(v) -> str:
    """One sentence naming the numerics the page's numbers are in (View `v`)."""
    m = v.manifest
    numerics = v.numerics
    detail = (m.numerics_detail or {}).get(numerics) or {}
    if numerics == "trainer":
        what = (f"trainer numerics ({detail.get('precision', '?')} autocast on {detail.get('device', '?')}, "
                f"eval batches of {detail.get('eval_batch_size', '?')}, float32 sums: the trainer's own forward)")
    else:
        dtype = detail.get("dtype", "float32")
        what = NUMERICS_LABEL["exact"] if dtype == "float32" else f"exact numerics with {dtype} weights (an approximation)"
    return f"Numbers: {what}."


def run_notes(v) -> None:
    """Overrides (warnings) and approximations (notes) recorded when the run was scored."""
    for line in v.manifest.overrides:
        st.warning(f"Override: {line}.", icon=":material/tune:")
    for line in v.manifest.notes:
        st.info(f"Note: {line}.", icon=":material/info:")


def precision_audit(v) -> None:
    """The audit of a run scored in both numerics; otherwise one sentence on why there is none."""
    rs = data.run_settings(v.root, v.run, v.ver).settings
    per_pair, summary = data.precision_audit(v.root, v.run, v.ver)
    st.subheader("Precision audit")
    if summary.empty:
        if rs.reduced_precision:
            st.info(f"The trainer ran in {rs.precision} autocast, but this run was scored in exact numerics only, "
                    "so the trainer's rounding is not measured here: score it with `--numerics both` (Score page: "
                    "Numerics → both).")
        else:
            st.caption("The trainer ran in fp32: its numbers and the exact ones differ only by float32 rounding, "
                       "so there is no audit.")
        return
    last = summary.iloc[-1]
    st.caption(f"The trainer ran in {rs.precision} autocast. Per pair, |trainer − exact| of each checkpoint's "
               "log-probs, log-ratios d = log π − log π_ref and reward margins, against the size of the signal.")
    c = st.columns(4)
    c[0].metric(f"median |Δ log-prob| ({last['model']})", f"{last['median Δ log-prob']:.3g} nats")
    c[1].metric("median |Δ log-ratio|", f"{last['median Δ log-ratio']:.3g} nats",
                help=f"median exact |d(y_w)|: {last['median |d(y_w)|']:.3g} nats")
    c[2].metric("median |Δ reward margin|", f"{last['median Δ reward margin']:.3g}",
                help=f"median exact |reward margin|: {last['median |reward margin|']:.3g}")
    c[3].metric("rounding / signal (margins)", f"{last['margin_error_share']:.1%}",
                help="median |Δ reward margin| over median |reward margin|: how much of a logged margin is rounding")
    st.plotly_chart(figures.precision_curves(summary, per_pair), key=f"audit_{v.run}")
    with st.expander("Per checkpoint"):
        widgets.table(summary)


def page_notes(v) -> None:
    """What every analysis page says under its title: the numerics its numbers are in, and one line
    when the run has overrides or approximations (the Runs page lists them)."""
    extra = []
    if v.manifest.overrides:
        extra.append(f"{len(v.manifest.overrides)} setting(s) overridden when scoring (see Runs)")
    if v.manifest.notes:
        extra.append(f"{len(v.manifest.notes)} approximation note(s) (see Runs)")
    st.caption(numerics_caption(v) + (" " + "; ".join(extra) + "." if extra else ""))
