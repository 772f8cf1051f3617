"""Compare: checkpoints A and B side by side — of one run, or of two runs on the same dataset and
reference: metric deltas, per-example deltas (top movers), A against B, and the DID between them (q_{B/A})."""

from __future__ import annotations

import streamlit as st

from did_core import sweep
from did_ui import crossrun, data, figures, picker, run_info, selection, views, widgets

widgets.start_page("compare")
cross = crossrun.compare_wants_other_run()  # A from another run: its pickers are drawn by crossrun
v = picker.view(need_a=not cross)
if v is None or v.ckpt is None:
    widgets.end_page()
run_info.page_notes(v)
offered, refused = crossrun.comparable(v)
a_run, a = crossrun.compare_a(v, offered, refused)
if refused:
    st.caption(widgets.md_literal(sweep.refusal_sentence(refused, v.run)))
if a is None:
    widgets.end_page()
b = v.ckpt  # A: the reference or a checkpoint (views.compare_baselines), of B's run or another; deltas are B − A

loss_b = data.run_settings(v.root, v.run, v.ver).settings.loss_label()
if a_run == v.run:
    table, summary, stats = data.compare(v.root, v.run, v.ver, a, b)
    label_a, label_b, loss_a = a, b, loss_b
else:
    ver_a = crossrun.version_of(v, a_run)
    table, summary, stats = data.compare_runs(v.root, a_run, ver_a, a, v.run, v.ver, b)
    label_a, label_b = views.run_label(a_run, a), views.run_label(v.run, b)
    loss_a = data.run_settings(v.root, a_run, ver_a).settings.loss_label()
    st.caption(f"A is {widgets.md_literal(a)} of run {widgets.md_literal(a_run)}, on the same dataset and reference as "
               f"B's run {widgets.md_literal(v.run)}: each side's rewards and losses at its own run's β and loss type.")
st.subheader(f"A = {widgets.md_literal(label_a)} → B = {widgets.md_literal(label_b)}")
metrics = summary.set_index("metric")
same = a_run == v.run and a == b
if same:
    st.info("A and B are the same checkpoint: pick two different ones in the sidebar to see deltas.")
loss_label = loss_b if loss_a == loss_b else f"A: {loss_a}, B: {loss_b}"
cols = st.columns(5)
for col, (metric, label, fmt) in zip(cols, [("accuracy", "accuracy", "{:.3f}"), ("log_margin", "mean log-margin", "{:.3f}"),
                                             ("loss", f"loss ({loss_label})", "{:.4f}"), ("displaced", "displaced share", "{:.3f}"),
                                             ("logp_chosen", "mean log π(y_w)", "{:.2f}")], strict=True):
    row = metrics.loc[metric]
    no_delta = same or (metric == "loss" and loss_a != loss_b)  # two loss types: no difference to take
    col.metric(label, fmt.format(row[f"B: {label_b}"]), delta=None if no_delta else fmt.format(row["Δ (B − A)"]),
               delta_color="inverse" if metric in ("loss", "displaced") else "normal",
               help=None if same else f"B; the delta is B − A (A: {fmt.format(row[f'A: {label_a}'])})")
if same:
    widgets.end_page()

st.subheader("The DID between A and B")
st.latex(r"d_{B/A}(y) = \log\pi_B(y\mid x) - \log\pi_A(y\mid x),\qquad "
         r"q_{B/A}(y) = \operatorname{softmax}_{y\in\{y_w,y_l\}} d_{B/A}(y)")
if stats:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("mean H(q_B/A) over pairs", f"{stats['mean_did_entropy_ba']:.4f}",
              help=f"95 % interval [{stats['did_entropy_ci_low']:.4f}, {stats['did_entropy_ci_high']:.4f}] "
                   f"({stats['did_entropy_ci_method']} over the {stats['n']:,} pairs); max log 2")
    c2.metric("pairs whose margin grew", f"{stats['share_margin_up']:.3f}")
    c3.metric("both fell from A to B", f"{stats['share_both_down']:.3f}")
    c4.metric("mean pair ESS 1/Σq²", f"{stats['mean_pair_ess']:.3f}")

pairs = widgets.pair_drill_down(v, "log-margin under A against under B, coloured by H(q_B/A); click a point to "
                                   "open that pair", "compare_pairs")
if pairs is not None:
    with pairs:
        event = widgets.pair_chart(figures.pair_scatter(table, "log_margin_a", "log_margin_b", "Log-margin, A against B",
                                                        f"M_A ({label_a})", f"M_B ({label_b})", colour="did_entropy_ba"),
                                   "compare_scatter")
        picked = selection.pair_id_from_selection(event, data.pair_ids(v.root, v.run, v.ver))
    if picked is not None:
        picker.open_example(v, picked, ckpt=b)

st.subheader("Per-example deltas (B − A): top movers")
c1, c2, c3 = st.columns([2, 1, 1])
numeric = [c for c in table.columns if c != "pair_id"]
sort_by = c1.selectbox("Sort by", numeric, index=numeric.index("delta_log_margin"), key="compare_sort")
direction = c2.radio("Movers", ["largest", "smallest"], horizontal=True, key="compare_dir")
query = c3.text_input("Filter: pair id contains", key="compare_filter")
shown = table[table["pair_id"].str.contains(query, regex=False)] if query else table
shown = shown.sort_values(sort_by, ascending=direction == "smallest", na_position="last").head(1000)
picked_row = widgets.table(shown, on_select="rerun", selection_mode="single-row", key="compare_table")
rows = picked_row.selection.rows if picked_row is not None else []
if rows:
    picker.open_example(v, str(shown.iloc[rows[0]]["pair_id"]), ckpt=b)
st.caption("The top 1,000 rows of the sort (click a column header to re-sort them); click a row, or select a point "
           "above, to open the example under B. The full per-pair table is in the export on Runs.")
file_name = f"{a_run}-{a}-vs-{v.run}-{b}.csv" if a_run != v.run else f"{v.run}-{a}-vs-{b}.csv"
st.download_button("All per-pair deltas (CSV)", lambda: table.to_csv(index=False).encode(), file_name, "text/csv",
                   on_click="ignore", icon=":material/download:")
means = widgets.drill_down("Mean metrics of A and B", key="compare_means")
if means is not None:
    means.dataframe(summary, hide_index=True)
