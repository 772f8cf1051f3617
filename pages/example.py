"""Example inspector: one preference pair, its tokens coloured by log-ratio, DID entropy, log-prob,
top-1 probability or next-token entropy (exact values on hover), the per-token squeezing beside the
reference's, and its log-probs across checkpoints.
Deep link: ?run=…&example=…&ckpt=…"""

from __future__ import annotations

import streamlit as st

from did_ui import ches_view, data, figures, live, picker, run_info, token_colours, widgets

widgets.start_page("example")
v = picker.view()
live.follow(v)  # a live run: reruns when it gains a step
if v is None or v.ckpt is None:
    widgets.end_page()
run_info.page_notes(v)

ids = data.pair_id_list(v.root, v.run, v.ver)
example = v.example or ids[0]
c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
typed = c1.text_input("Pair id", value=example, key=f"example_id_{example}",
                      help="Or select points on Log-margins, DID entropy or Compare.").strip()
at = ids.index(example)
if c2.button("Previous", disabled=at == 0, width="stretch"):
    picker.open_example(v, ids[at - 1])
if c3.button("Next", disabled=at + 1 >= len(ids), width="stretch"):
    picker.open_example(v, ids[at + 1])
if typed != example:
    if typed in data.pair_ids(v.root, v.run, v.ver):
        picker.open_example(v, typed)
    st.warning("No pair with that id in this run.")

text = data.example_text(v.root, v.run, v.ver, example)
across = data.example_across_checkpoints(v.root, v.run, v.ver, example)
st.caption(f"Run {widgets.md_literal(v.run)} · pair {widgets.md_literal(example)} · tokens under "
           f"{widgets.md_literal(v.ckpt)} against the reference")

st.markdown("**Prompt**")
st.text(text.get("prompt", ""))
colour_by = st.segmented_control("Colour tokens by", list(token_colours.COLOUR_BY), default="log_ratio",
                                 format_func=token_colours.COLOUR_BY.get, key="example_colour") or "log_ratio"
tokens = data.example_tokens(v.root, v.run, v.ver, v.ckpt, example)
scale = token_colours.colour_scale(tokens, colour_by)  # one scale for both responses: one colour, one value
st.html(token_colours.colour_legend_html(colour_by, scale))
squeezing_gone = ches_view.token_squeezing_missing(v, tokens) if colour_by in token_colours.SQUEEZING_COLOURS else None
if squeezing_gone is not None:
    st.info(f"No {token_colours.COLOUR_BY[colour_by]} to colour by under {v.ckpt}: {squeezing_gone}.", icon=":material/info:")
st.caption(token_colours.COLOUR_CAPTION[colour_by] + " Both responses share one scale. Hover a token for its exact "
           "log-prob, reference log-prob, log-ratio, DID entropy, and top-1 probability and next-token entropy "
           "(the checkpoint's and the reference's).")
row = across[across["checkpoint"] == v.ckpt]
left, right = st.columns(2)
for col, side, label in ((left, "chosen", "Chosen y_w"), (right, "rejected", "Rejected y_l")):
    with col:
        st.markdown(f"**{label}**")
        if len(row):
            r = row.iloc[0]
            st.caption(f"log π = {r[f'logp_{side}']:.4f} · d = log π/π_ref = {r[f'log_ratio_{side}']:.4f} · "
                       f"DID entropy (token mean) = {r[f'did_entropy_{side}']:.4f}")
        side_tokens = tokens[tokens["side"] == side].sort_values("position") if len(tokens) else tokens
        if len(side_tokens):
            st.html(token_colours.tokens_html(side_tokens, colour_by, scale))
        else:
            st.caption("No per-token scores stored for this checkpoint.")
        with st.expander("Plain text"):
            st.text(text.get(side, ""))

ches_view.token_squeezing_section(v, tokens)
st.plotly_chart(figures.example_lines(across), key="example_lines")
widgets.table(across)
