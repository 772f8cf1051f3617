"""Plotly figure builders for the pages. Inputs are view models from `data`/`views` (pre-binned
histograms, per-checkpoint tables); the scatters use WebGL (`go.Scattergl`) above SVG_MAX_POINTS
points so 10,000 stay smooth, SVG below (cheaper to draw there), and carry the pair id first in
`customdata` so a selection opens the inspector.

It is long (over 350 lines) because it holds every chart of the dashboard, one short builder each,
sharing the colours, axis styles and the WebGL switch; pages pick builders, never style charts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
              legend=dict(orientation="h", yanchor="top", y=-0.3))


TRACE_NAMES: dict[str, str] = {
    # the synthetic lab's exact trajectory (did_core.lab.trajectory_metrics)
    "js_target": "JS(π, π*)", "kl_policy_target": "KL(π ‖ π*)", "kl_target_policy": "KL(π* ‖ π)",
    "unseen_mass": "π's mass on responses in no pair", "policy_entropy": "policy entropy H(π)",
    "did_entropy": "DID entropy H(q_π/π_ref)", "loss": "training loss",
    # per-pair columns of the pairs table (views.with_derived, did_core.compare)
    "logp_chosen": "log π(y_w)", "logp_rejected": "log π(y_l)",
    "log_ratio_chosen": "d(y_w) = log π/π_ref (chosen)", "log_ratio_rejected": "d(y_l) = log π/π_ref (rejected)",
    "log_margin": "log-margin M_π", "ref_log_margin": "reference log-margin M_ref",
    "reward_margin": "reward margin β(M_π − M_ref)", "dpo_loss": "DPO loss (sigmoid)",
    "did_entropy_chosen": "DID entropy, chosen (token mean)", "did_entropy_rejected": "DID entropy, rejected (token mean)",
    "did_entropy_pair": "DID entropy over {y_w, y_l}", "did_entropy_ba": "H(q_B/A) over {y_w, y_l}",
    "residual": "residual of the fit",
    # CHES and squeezing (did_core.ches)
    "ches": "CHES (reference)", "ches_norm": "CHES, length-normalised (reference)",
    "delta_logp_chosen": "Δ log π(y_w) (policy − reference)",
    "top1_prob": "mean top-1 probability", "token_entropy": "mean next-token entropy (nats)",
}
"""Human names for the column names the pages pass to the builders: every legend entry and colour
bar says what a trace is in the paper's words, never a column name (tests/test_app.py checks)."""


def human_name(name: str) -> str:
    """TRACE_NAMES' name for a column, else the name itself (already a label, or a checkpoint's name)."""
    return TRACE_NAMES.get(name, name)


def colours(n: int, scale: str = "Viridis") -> list[str]:
    """`n` colours along a sequential scale (early checkpoints dark, late ones light)."""
    return sample_colorscale(scale, [0.5] if n <= 1 else list(np.linspace(0.0, 0.9, n)))


def hex_to_rgba(colour: str, alpha: float) -> str:
    if colour.startswith("rgb("):
        return colour.replace("rgb(", "rgba(").replace(")", f",{alpha})")
    c = colour.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


SVG_MAX_POINTS = 1500
"""Chromium (software rendering, 2 cores) drew a 200-point scatter in 0.23 s of CPU as SVG and 0.62 s
as WebGL, whose context costs ~0.4 s to set up; at 2,000 points both took ~0.55 s, at 10,000 SVG took
1.9 s and WebGL 1.0 s."""

TRAINER_STYLE = {"trainer_train": ("trainer log (train batches)", "#d62728"), "trainer_eval": ("trainer log (eval)", "#ff7f0e")}


def _band_traces(scored: pd.DataFrame, trainer: pd.DataFrame | None, legend: bool) -> list[go.Scatter]:
    """Quantile bands, median, mean and the trainer's logged values for one quantity over steps."""
    x = scored.index.tolist()
    traces: list[go.Scatter] = []
    if {"q10", "q90", "q25", "q75"} <= set(scored.columns):
        for lo, hi, alpha, name in (("q10", "q90", 0.15, "10–90 %"), ("q25", "q75", 0.3, "25–75 %")):
            band = scored[[lo, hi]].dropna()  # one closed outline: hi left to right, then lo back
            traces.append(go.Scatter(x=[*band.index, *band.index[::-1]], y=[*band[hi], *band[lo][::-1]], mode="lines",
                                     line=dict(width=0), fill="toself", fillcolor=f"rgba(31,119,180,{alpha})",
                                     name=name, legendgroup=name, showlegend=legend, hoverinfo="skip"))
        traces.append(go.Scatter(x=x, y=scored["q50"], mode="lines+markers", name="median", legendgroup="median",
                                 line=dict(color="#1f77b4"), showlegend=legend))
    traces.append(go.Scatter(x=x, y=scored["mean"], mode="lines+markers" if "q50" not in scored else "lines",
                             name="mean", legendgroup="mean", showlegend=legend,
                             line=dict(color="#1f77b4", dash="dot" if "q50" in scored else None)))
    for source in (trainer.columns if trainer is not None else []):
        label, colour = TRAINER_STYLE.get(source, (source, "#7f7f7f"))
        values = trainer[source].dropna()
        traces.append(go.Scatter(x=values.index.tolist(), y=values.tolist(), mode="lines", name=label,
                                 legendgroup=label, showlegend=legend, line=dict(color=colour, dash="dash")))
    return traces


def band_curves(scored: pd.DataFrame, trainer: pd.DataFrame | None, title: str) -> go.Figure:
    """Mean and median over steps with 10–90 % and 25–75 % quantile bands (`scored`: index step,
    columns mean/q10…q90); the trainer's logged values dashed on top (`trainer`: step × source)."""
    fig = go.Figure(_band_traces(scored, trainer, legend=True))
    fig.update_layout(title=title, xaxis_title="step (reference at 0)", height=320, **LAYOUT)
    return fig


def band_grid(panels: list[tuple[str, pd.DataFrame, pd.DataFrame | None]], cols: int = 2) -> go.Figure:
    """`band_curves` for several quantities as one figure of subplots (title, scored, trainer) — one
    chart for the browser to mount instead of one per quantity, which is what made the page slow."""
    from plotly.subplots import make_subplots

    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels], vertical_spacing=0.3 / rows,
                        horizontal_spacing=0.08)
    seen: set[str] = set()
    for i, (_, scored, trainer) in enumerate(panels):
        for trace in _band_traces(scored, trainer, legend=True):
            trace.showlegend = trace.showlegend is not False and trace.legendgroup not in seen
            if trace.showlegend:
                seen.add(trace.legendgroup)
            fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="step", row=rows)
    fig.update_layout(height=280 * rows + 80, **LAYOUT | {"legend": dict(orientation="h", y=-0.06 * 4 / rows)})
    return fig


def share_curves(frames: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]], labels: dict[str, str]) -> go.Figure:
    """Shares of pairs over steps (one line per metric), the trainer's accuracy dashed when given."""
    fig = go.Figure()
    for metric, (scored, trainer) in frames.items():
        if scored.empty:
            continue
        fig.add_trace(go.Scatter(x=scored.index.tolist(), y=scored["mean"], mode="lines+markers", name=labels[metric]))
        for source in (trainer.columns if trainer is not None else []):
            values = trainer[source].dropna()
            fig.add_trace(go.Scatter(x=values.index.tolist(), y=values.tolist(), mode="lines", line=dict(dash="dash"),
                                     name=f"{labels[metric]}: {TRAINER_STYLE.get(source, (source,))[0]}"))
    fig.update_layout(title="Shares of pairs", xaxis_title="step", yaxis=dict(range=[0, 1]), height=360, **LAYOUT)
    return fig


def _hist_lines(hist: dict, only: list[str] | None, legend: bool) -> list[go.Scatter]:
    """One frequency polygon per checkpoint of a pre-binned histogram (those in `only`, when given):
    a line through the bin centres at the bin counts. Step outlines ("hvh") turn twice per bin, and
    five or six of them overlaid cross one another everywhere; a polygon turns once per bin."""
    names = [n for n in hist["counts"] if only is None or n in only]
    return [go.Scatter(x=hist["centers"], y=hist["counts"][name], mode="lines", name=name, legendgroup=name,
                       showlegend=legend, line=dict(color=colour, width=2),
                       hovertemplate="%{fullData.name}<br>%{y} pairs near %{x:.3g}<extra></extra>")
            for name, colour in zip(names, colours(len(names)), strict=True)]


def histogram_overlay(hist: dict, title: str, x_title: str, extra: dict | None = None,
                      only: list[str] | None = None) -> go.Figure:
    """Pre-binned histograms drawn as overlaid frequency polygons (one per checkpoint). `extra` (the
    reference) is a grey filled area with a dashed outline behind them: a backdrop to read every
    checkpoint against, not one more line among them. Its bins may be wider or narrower (its own
    range): its counts are scaled to the checkpoints' bin width, so heights compare."""
    fig = go.Figure()
    for name, counts in (extra or {}).get("counts", {}).items():
        per_bin = hist["width"] / extra["width"] if extra["width"] > 0 else 1.0
        fig.add_trace(go.Scatter(x=extra["centers"], y=[c * per_bin for c in counts], mode="lines", name=name,
                                 fill="tozeroy",
                                 fillcolor="rgba(127,127,127,0.25)", line=dict(color="rgb(90,90,90)", dash="dash", width=1),
                                 hovertemplate="%{fullData.name}<br>%{y:.3g} pairs near %{x:.3g} (per checkpoint bin)"
                                               "<extra></extra>"))
    fig.add_traces(_hist_lines(hist, only, legend=True))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="pairs", height=340, **LAYOUT)
    return fig


def histogram_panels(panels: list[tuple[str, dict]], x_title: str, only: list[str] | None = None) -> go.Figure:
    """`histogram_overlay` for several pre-binned histograms side by side (title, hist) in one figure,
    one legend entry per checkpoint toggling it in every panel: one chart for the browser to mount."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for title, _ in panels], horizontal_spacing=0.08)
    for i, (_, hist) in enumerate(panels):
        for trace in _hist_lines(hist, only, legend=i == 0):
            fig.add_trace(trace, row=1, col=i + 1)
        fig.update_xaxes(title_text=x_title, row=1, col=i + 1)
    fig.update_yaxes(title_text="pairs", row=1, col=1)
    fig.update_layout(height=360, **LAYOUT)
    return fig


def pair_scatter(rows: pd.DataFrame, x: str, y: str, title: str, x_title: str, y_title: str,
                 colour: str | None = None, diagonal: bool = True, slope: float | None = None) -> go.Figure:
    """One point per pair (WebGL above SVG_MAX_POINTS points, SVG below); `customdata` = [pair_id] for
    selection → inspector. No drag mode is set: Streamlit then makes a click select (see widgets.pair_chart)."""
    marker: dict = dict(size=5, opacity=0.6)
    if colour is not None and colour in rows:
        marker |= dict(color=rows[colour], colorscale="RdBu", showscale=True, colorbar=dict(title=human_name(colour)))
    kind = go.Scatter if len(rows) <= SVG_MAX_POINTS else go.Scattergl
    fig = go.Figure(kind(
        x=rows[x], y=rows[y], mode="markers", marker=marker, customdata=rows[["pair_id"]].to_numpy(),
        hovertemplate="pair %{customdata[0]}<br>" + x_title + " %{x:.4f}<br>" + y_title + " %{y:.4f}<extra></extra>",
        name="pairs"))
    finite = pd.concat([rows[x], rows[y]]).replace([np.inf, -np.inf], np.nan).dropna()
    if diagonal and len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(color="grey", dash="dot")))
    if slope is not None and len(finite):
        xs = rows[x].replace([np.inf, -np.inf], np.nan).dropna()
        lo, hi = float(xs.min()), float(xs.max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[slope * lo, slope * hi], mode="lines", name=f"fit through 0, slope {slope:.3g}",
                                 line=dict(color="#d62728")))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=460, **LAYOUT)
    return fig


def example_lines(across: pd.DataFrame) -> go.Figure:
    """One pair's chosen/rejected log-probs (and log-ratios) over checkpoints."""
    x = across["step"].tolist() if across["step"].notna().all() else across["checkpoint"].tolist()
    fig = go.Figure()
    for col, name, colour, dash in (("logp_chosen", "log π(y_w|x)", "#2ca02c", None),
                                    ("logp_rejected", "log π(y_l|x)", "#d62728", None),
                                    ("log_ratio_chosen", "d(y_w)", "#2ca02c", "dot"),
                                    ("log_ratio_rejected", "d(y_l)", "#d62728", "dot")):
        fig.add_trace(go.Scatter(x=x, y=across[col], mode="lines+markers", name=name, line=dict(color=colour, dash=dash)))
    fig.update_layout(title="This example across checkpoints (nats)", xaxis_title="step", height=320, **LAYOUT)
    return fig


def bars(frame: pd.DataFrame, x: str, ys: list[str], title: str) -> go.Figure:
    fig = go.Figure([go.Bar(x=frame[x], y=frame[y], name=human_name(y)) for y in ys])
    fig.update_layout(title=title, barmode="group", height=320, **LAYOUT)
    return fig


def lines(frame: pd.DataFrame, x: str, ys: list[str], title: str, y_title: str = "") -> go.Figure:
    fig = go.Figure([go.Scatter(x=frame[x], y=frame[y], mode="lines", name=human_name(y)) for y in ys])
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y_title, height=320, **LAYOUT)
    return fig


UNRELIABLE = "#9e9e9e"


def estimator_lines(by_step: pd.DataFrame, labels: dict[str, str]) -> go.Figure:
    """Mean sequence-level DID entropy over prompts per step, one line per estimator; the sampled
    estimators carry their mean interval as error bars and their mean ESS as a label beside each point.
    A point whose mean ESS is below `entropy.RELIABLE_ESS` is drawn grey, its label marked "low"."""
    import plotly.colors as pcolors

    from did_core.entropy import RELIABLE_ESS

    fig = go.Figure()
    labelled = 0  # the sampled estimators' ESS labels alternate above and below their line, apart from the others
    for col, label in labels.items():
        if col not in by_step:
            continue
        stem = col.removesuffix("_entropy")
        err, marker, text, mode = None, None, None, "lines+markers"
        if f"{stem}_ci_low" in by_step and f"{stem}_ci_high" in by_step:
            err = dict(type="data", symmetric=False, array=(by_step[f"{stem}_ci_high"] - by_step[col]).tolist(),
                       arrayminus=(by_step[col] - by_step[f"{stem}_ci_low"]).tolist())
        if f"{stem}_ess" in by_step:
            ess = by_step[f"{stem}_ess"].to_numpy(dtype=float)
            low = ~(ess >= RELIABLE_ESS)
            own = pcolors.DEFAULT_PLOTLY_COLORS[len(fig.data) % len(pcolors.DEFAULT_PLOTLY_COLORS)]
            marker = dict(color=[UNRELIABLE if x else own for x in low],
                          symbol=["circle-open" if x else "circle" for x in low])
            text = [f"ESS {e:.1f}" + (" (low)" if x else "") for e, x in zip(ess, low)]
            mode = "lines+markers+text"
            labelled += 1
            if err is not None and low.any():
                err["color"] = UNRELIABLE
        fig.add_trace(go.Scatter(x=by_step["step"].tolist(), y=by_step[col].tolist(), mode=mode, name=label,
                                 error_y=err, marker=marker, text=text,
                                 textposition="bottom right" if labelled % 2 == 0 else "top right",
                                 textfont=dict(size=10),
                                 line=dict(dash="dash") if col == "target_did_entropy" else None))
    fig.update_layout(title="Sequence-level DID entropy, mean over prompts", xaxis_title="step",
                      yaxis_title="entropy (nats)", height=360, **LAYOUT)
    steps = pd.to_numeric(by_step["step"], errors="coerce").dropna() if "step" in by_step else pd.Series(dtype=float)
    if labelled and len(steps):  # room on the right for the last point's label
        lo, hi = float(steps.min()), float(steps.max())
        span = hi - lo or max(abs(hi), 1.0)
        fig.update_xaxes(range=[lo - 0.04 * span, hi + 0.12 * span])
    return fig


def precision_curves(summary: pd.DataFrame, per_pair: pd.DataFrame) -> go.Figure:
    """The precision audit over steps: per checkpoint, |Δ reward margin| between the trainer numerics
    and the exact ones (median line, 10–90 % band over pairs) against the signal, the median exact
    |reward margin|. Log y axis: rounding is usually an order of magnitude or more below the signal."""
    q = per_pair.groupby("model", sort=False)["d_reward_margin"].quantile([0.1, 0.9]).unstack()
    s = summary.set_index("model")
    x = s["step"].astype(float).tolist()
    lo, hi = q.loc[s.index, 0.1].tolist(), q.loc[s.index, 0.9].tolist()
    fig = go.Figure([
        go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(214,39,40,0.18)",
                   line=dict(width=0), name="|Δ reward margin|, 10–90 % of pairs", hoverinfo="skip"),
        go.Scatter(x=x, y=s["median Δ reward margin"], mode="lines+markers", line=dict(color="#d62728"),
                   name="|Δ reward margin|, median (rounding)"),
        go.Scatter(x=x, y=s["median |reward margin|"], mode="lines+markers", line=dict(color="#1f77b4"),
                   name="|reward margin|, median (the signal, exact)"),
    ])
    fig.update_layout(**LAYOUT, title="Trainer numerics against exact, per pair", xaxis_title="step",
                      yaxis_title="nats (log scale)", yaxis_type="log", height=330)
    return fig


RUN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
"""One colour per run in an overlay of several runs (Plotly's qualitative palette without its grey and
olive), in the order the runs were chosen; repeated after eight."""
TRAINER_DASH = {"trainer_train": "dash", "trainer_eval": "dot"}


def run_colour(i: int) -> str:
    return RUN_COLOURS[i % len(RUN_COLOURS)]


def _run_traces(run: str, colour: str, scored: pd.DataFrame, trainer: pd.DataFrame | None) -> list[go.Scatter]:
    """One run in an overlay: its 25–75 % band (one closed outline) and median when `scored` has
    quantiles, else its mean with markers; the trainer's logged values dashed, in the run's colour."""
    traces: list[go.Scatter] = []
    if {"q25", "q75"} <= set(scored.columns):
        band = scored[["q25", "q75"]].dropna()
        traces.append(go.Scatter(x=[*band.index, *band.index[::-1]], y=[*band["q75"], *band["q25"][::-1]],
                                 mode="lines", line=dict(width=0), fill="toself", fillcolor=hex_to_rgba(colour, 0.15),
                                 name=f"{run}: 25–75 %", legendgroup=run, showlegend=False, hoverinfo="skip"))
    centre = "q50" if "q50" in scored else "mean"
    line = scored[centre].dropna()
    traces.append(go.Scatter(x=line.index.tolist(), y=line.tolist(), mode="lines+markers", name=run, legendgroup=run,
                             line=dict(color=colour), hovertemplate=f"{run}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"))
    for source in (trainer.columns if trainer is not None else []):
        values = trainer[source].dropna()
        label = f"{run}: {TRAINER_STYLE.get(source, (source,))[0]}"
        traces.append(go.Scatter(x=values.index.tolist(), y=values.tolist(), mode="lines", name=label,
                                 legendgroup=label, line=dict(color=colour, dash=TRAINER_DASH.get(source, "dashdot"))))
    return traces


def run_overlay(panels: list[tuple[str, dict[str, tuple[pd.DataFrame, pd.DataFrame | None]]]], runs: list[str],
                cols: int = 2, y_range: tuple[float, float] | None = None) -> go.Figure:
    """Several runs over steps in one figure of subplots, one per quantity (title, {run: (scored,
    trainer)}): per run one colour (its position in `runs`), its median and 25–75 % band over pairs
    (or its mean, for shares), and the trainer's logged values dashed. One legend entry per run."""
    from plotly.subplots import make_subplots

    if not panels:
        return go.Figure(layout=dict(title="Nothing to overlay for these runs", height=200, **LAYOUT))
    cols = min(cols, len(panels))
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels], vertical_spacing=0.3 / rows,
                        horizontal_spacing=0.08)
    seen: set[str] = set()
    for i, (_, frames) in enumerate(panels):
        for k, run in enumerate(runs):
            if run not in frames or frames[run][0].empty:
                continue
            for trace in _run_traces(run, run_colour(k), *frames[run]):
                trace.showlegend = trace.showlegend is not False and trace.name not in seen
                seen.add(trace.name)
                fig.add_trace(trace, row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="step", row=rows)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    fig.update_layout(height=280 * rows + 80, **LAYOUT | {"legend": dict(orientation="h", y=-0.06 * 4 / max(rows, 1))})
    return fig


def ches_quintiles(q: pd.DataFrame, title: str) -> go.Figure:
    """Share of displaced pairs (Δ log π(y_w) < 0) per CHES quintile (did_core.ches.displaced_by_quantile)."""
    labels = [f"Q{b} ({lo:.3g} … {hi:.3g})" for b, lo, hi in zip(q["bin"], q["ches_lo"], q["ches_hi"])]
    fig = go.Figure(go.Bar(x=labels, y=q["displaced_share"].tolist(), name="displaced share (Δ log π(y_w) < 0)",
                           customdata=q[["n"]].to_numpy(),
                           hovertemplate="%{x}<br>displaced %{y:.1%} of %{customdata[0]} pairs<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="CHES quintile (Q1 lowest; range of CHES in it)",
                      yaxis_title="share displaced", yaxis_range=[0, 1], height=320, **LAYOUT)
    return fig


SIDE_STYLE = {"chosen": ("chosen y_w", "#2ca02c"), "rejected": ("rejected y_l", "#d62728")}


def squeezing_curves(frame: pd.DataFrame) -> go.Figure:
    """Mean top-1 probability and mean next-token entropy over steps, chosen and rejected, the reference
    at step 0 as a hollow marker on each line (did_core.ches.squeezing_curves)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=[TRACE_NAMES["top1_prob"], TRACE_NAMES["token_entropy"]],
                        horizontal_spacing=0.1)
    for side, (label, colour) in SIDE_STYLE.items():
        g = frame[frame["side"] == side].sort_values("step")
        for col, metric in enumerate(("top1_prob", "token_entropy"), start=1):
            # plain lists: gd.data keeps numpy arrays base64-encoded, and readers (tests, the live test) iterate x
            fig.add_trace(go.Scatter(x=g["step"].tolist(), y=g[metric].tolist(), mode="lines+markers", name=label,
                                     legendgroup=side,
                                     showlegend=col == 1, line=dict(color=colour),
                                     customdata=g[["model"]].to_numpy(),
                                     hovertemplate="%{customdata[0]} (step %{x})<br>%{y:.4f}<extra></extra>"),
                          row=1, col=col)
            ref = g[g["model"] == "reference"]
            fig.add_trace(go.Scatter(x=ref["step"].tolist(), y=ref[metric].tolist(), mode="markers",
                                     name=f"reference, {side}",
                                     legendgroup=f"ref-{side}", showlegend=col == 1,
                                     marker=dict(color="white", size=10, line=dict(color=colour, width=2))),
                          row=1, col=col)
    fig.update_xaxes(title_text="step (reference at 0)")
    fig.update_layout(height=340, **LAYOUT)
    return fig


def token_squeezing_lines(tokens: pd.DataFrame, ckpt: str) -> go.Figure:
    """Over response positions, one pair's per-token top-1 probability (left) and next-token entropy
    (right): `ckpt`'s (solid) beside the reference's (dotted), chosen and rejected (`ws.tokens` rows)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["top-1 probability at each position",
                                                        "next-token entropy at each position (nats)"],
                        horizontal_spacing=0.1)
    for side, (label, colour) in SIDE_STYLE.items():
        g = tokens[tokens["side"] == side].sort_values("position")
        for col, metric in enumerate(("top1_prob", "token_entropy"), start=1):
            for prefix, name, dash in (("", f"{ckpt}, {label}", "solid"), ("ref_", f"reference, {label}", "dot")):
                fig.add_trace(go.Scatter(x=g["position"].tolist(), y=g[prefix + metric].astype(float).tolist(),
                                         mode="lines+markers", name=name, legendgroup=prefix + side,
                                         showlegend=col == 1, line=dict(color=colour, dash=dash),
                                         marker=dict(size=4), customdata=g[["token"]].to_numpy(),
                                         hovertemplate="#%{x} %{customdata[0]}<br>%{y:.4f}<extra>" + name
                                         + "</extra>"), row=1, col=col)
    fig.update_xaxes(title_text="position in the response (0 = first token)")
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_layout(height=320, **LAYOUT)
    return fig
