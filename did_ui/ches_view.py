"""The CHES section of Log-margins and the squeezing section of Training curves (maths: did_core.ches;
formulas: docs/ANALYTICS.md, "CHES and squeezing"). Each caption says what a figure shows and in which
numerics its numbers are."""

from __future__ import annotations

import math

import streamlit as st

from did_core import ches
from did_ui import data, figures, picker, run_info, selection, widgets


def _exact_dtype(v) -> str:
    return ((v.manifest.numerics_detail or {}).get("exact") or {}).get("dtype", "float32")


def ches_caption(v) -> str:
    """Where CHES comes from, whatever numerics the page shows (it is always the reference's exact pass)."""
    return (f"CHES: the reference's, from its exact-numerics scoring pass ({_exact_dtype(v)} forward; its last "
            "hidden states, the head's inputs, summed per response in float64). ")


def interval_help(rho: dict) -> str:
    """What the interval beside ρ is (did_core.ches.spearman_interval's method)."""
    if rho["method"].startswith("bootstrap"):
        return (f"The percentile interval of ρ over {rho['method'].removeprefix('bootstrap (').rstrip(')')} of the "
                f"pairs (with replacement, each re-ranked), used up to {ches.BOOTSTRAP_MAX_N:,} pairs.")
    return (f"Above {ches.BOOTSTRAP_MAX_N:,} pairs: tanh(atanh ρ ± 1.96·se) with the Bonett–Wright "
            "se = √((1 + ρ²/2)/(n − 3)); at these n it agrees with the 1,000-resample bootstrap's "
            "endpoints to about 0.001, at a fraction of its cost.")


def _missing(v, columns: tuple[str, ...]) -> str | None:
    """Why these columns are empty on this run (None when stored)."""
    gone = data.not_stored(v.root, v.run, v.ver)
    reasons = [gone[c] for c in columns if c in gone]
    return reasons[0] if reasons else None


def ches_section(v, aggregation: str) -> None:
    """CHES against Δ log π(y_w) at the selected checkpoint: scatter, Spearman ρ with its interval (and
    which one it is), displaced share per CHES quintile; ρ at every checkpoint behind a drill-down."""
    st.subheader("CHES")
    st.latex(r"\mathrm{CHES}(x, y_w, y_l) = \langle S^+, S^- \rangle - \lVert S^+ \rVert^2,\quad "
             r"S^{\pm} = \textstyle\sum_t h_t(x, y_{w/l})")
    st.caption("Razin et al. (2024): h_t is the reference's last hidden state at each position that predicts a "
               "response token; a pair whose chosen and rejected responses look alike to the model (high CHES) is "
               "predicted to lose more chosen likelihood, so the claim reads as ρ < 0 below. "
               + ("Per-token mean: the length-normalised CHES (means of h_t) against Δ log π(y_w) per token. "
                  if aggregation == "mean" else ""))
    why = _missing(v, ("ches", "ches_norm"))
    if why is not None:
        st.info(f"No CHES for this run: {why}.", icon=":material/info:")
        return
    view = data.ches_view(v.root, v.run, v.ver, v.ckpt, aggregation)
    rho, rows = view["rho"], view["rows"]
    numbers = (ches_caption(v) + f"Δ log π(y_w) = log π(y_w) − log π_ref(y_w) at {widgets.md_literal(v.ckpt)}, "
               + ("per token; " if aggregation == "mean" else "summed over its tokens; ")
               + run_info.numerics_caption(v))
    c1, c2, c3 = st.columns(3)
    c1.metric("Spearman ρ(CHES, Δ log π(y_w))", "n/a" if math.isnan(rho["rho"]) else f"{rho['rho']:+.3f}",
              help="rank correlation over the pairs with both values")
    boot = rho["method"].startswith("bootstrap")
    c2.metric("95% bootstrap interval" if boot else "95% interval (Fisher z)",
              "n/a" if math.isnan(rho["lo"]) else f"[{rho['lo']:+.3f}, {rho['hi']:+.3f}]", help=interval_help(rho))
    c3.metric("pairs", f"{rho['n']:,}")
    st.caption(f"Interval: {rho['method']}. " + interval_help(rho))
    q = view["quintiles"]
    st.plotly_chart(figures.ches_quintiles(q, f"{v.ckpt}: share of pairs whose chosen likelihood fell, by CHES quintile"),
                    key="ches_quintiles")
    st.caption("Bars: the share of pairs with Δ log π(y_w) < 0 in each fifth of the pairs ordered by CHES. " + numbers)
    box = widgets.pair_drill_down(v, f"CHES against Δ log π(y_w) at {widgets.md_literal(v.ckpt)}; click a point "
                                     "to inspect it", "margins_ches_pairs")
    if box is not None:
        with box:
            event = widgets.pair_chart(figures.pair_scatter(
                rows, "ches", "delta_logp_chosen", f"{v.ckpt}: Δ log π(y_w) against the reference's CHES",
                figures.human_name("ches_norm" if aggregation == "mean" else "ches"),
                figures.human_name("delta_logp_chosen"), diagonal=False), "ches_scatter")
            st.caption("One point per pair. " + numbers)
            valid = data.pair_ids(v.root, v.run, v.ver)
            picked = [p for p in selection.pair_ids_from_selection(event) if p in valid]
            if len(picked) == 1:
                picker.open_example(v, picked[0])
    table = widgets.drill_down("ρ(CHES, Δ log π(y_w)) at every checkpoint", key="margins_ches_table")
    if table is not None:
        table.dataframe(data.ches_correlations(v.root, v.run, v.ver, aggregation), hide_index=True)
        table.caption("ρ with its 95% interval (column method: the 1,000-resample bootstrap up to "
                      f"{ches.BOOTSTRAP_MAX_N:,} pairs, Fisher z with the Bonett–Wright se above) and the share "
                      "displaced (Δ log π(y_w) < 0) per checkpoint. "
                      + ches_caption(v) + run_info.numerics_caption(v))


def squeezing_section(v) -> None:
    """Mean top-1 probability and next-token entropy of chosen and rejected over checkpoints, beside
    the reference (squeezing: Ren & Sutherland, ICLR 2025)."""
    st.subheader("Squeezing: how peaked the model's next-token distribution is")
    st.caption("Ren & Sutherland (ICLR 2025): DPO's negative gradient on y_l pushes probability mass toward the "
               "most likely token, so the policy's distribution can sharpen (top-1 probability up, entropy down) "
               "on responses it was never trained toward.")
    why = _missing(v, ("top1_prob_chosen", "token_entropy_chosen"))
    if why is not None:
        st.info(f"No squeezing columns for this run in these numerics: {why}.", icon=":material/info:")
        return
    frame = data.squeezing(v.root, v.run, v.ver)
    st.plotly_chart(figures.squeezing_curves(frame), key="squeezing")
    st.caption("Per response, the mean over its positions of max_v π(v | x, y_<t) (left) and of the next-token "
               "entropy −Σ_v π(v|·) log π(v|·) in nats (right), under each model's own distribution; then the mean "
               "over pairs, for chosen and rejected, the reference at step 0 (hollow markers). "
               + run_info.numerics_caption(v))


def token_squeezing_missing(v, tokens) -> str | None:
    """Why the Example page's per-token squeezing is empty under the selected checkpoint (None: stored)."""
    gone = data.tokens_not_stored(v.root, v.run, v.ver, v.ckpt)
    reasons = [gone[c] for c in ("top1_prob", "ref_top1_prob", "token_entropy", "ref_token_entropy") if c in gone]
    if reasons:
        return reasons[0]
    if len(tokens) and tokens["top1_prob"].isna().all():
        return "no per-token squeezing is stored for this pair"
    return None


def token_squeezing_section(v, tokens) -> None:
    """The Example page's per-token squeezing: the checkpoint's top-1 probability and next-token entropy
    at each response position, beside the reference's (Ren & Sutherland, ICLR 2025)."""
    st.markdown("**Squeezing at each token**")
    why = token_squeezing_missing(v, tokens)
    if why is not None:
        st.info(f"No per-token squeezing under {v.ckpt}: {why}.", icon=":material/info:")
        return
    if not len(tokens):
        st.caption("No per-token scores stored for this checkpoint.")
        return
    st.plotly_chart(figures.token_squeezing_lines(tokens, v.ckpt), key="example_squeezing")
    st.caption(f"At each position t of each response: max_v π(v | x, y_<t) (left) and the next-token entropy "
               f"−Σ_v π(v|·) log π(v|·) in nats (right), of {widgets.md_literal(v.ckpt)}'s own distribution "
               "(solid) and the reference's (dotted); a squeezed policy sits above the reference on the left and "
               "below it on the right. The stored float32 values of the exact numerics' head pass (softmax of "
               f"float32 logits); {_exact_dtype(v)} forward. " + run_info.numerics_caption(v))
