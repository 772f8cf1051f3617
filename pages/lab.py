"""Synthetic lab: the paper's energy-based experiment on a finite support, computed exactly and
re-run as the sliders move (did_core.lab)."""

from __future__ import annotations

import streamlit as st

from did_ui import data, figures, views, widgets

widgets.start_page("lab")
st.caption("A finite support, π_ref from random energies, a target DID q* of chosen entropy, π* ∝ π_ref·q*. "
           "Pairs y_w ~ π_ref, y_l ~ π_l; a tabular policy starts at π_ref and is trained on them. "
           "Every curve is exact (sums over the whole support).")
st.latex(r"\pi^* \propto \pi_{\mathrm{ref}}\,q^*,\qquad \pi_l \propto \pi_{\mathrm{ref}}^{1+\beta}\,\pi^{*\,-\beta}"
         r"\quad\Rightarrow\quad q_{\pi_{\mathrm{ref}}/\pi_l}(y) \propto q_{\pi^*/\pi_{\mathrm{ref}}}(y)^{\beta}")

d = views.LAB_DEFAULTS
c1, c2, c3, c4 = st.columns(4)
target_entropy = c1.slider("Target DID entropy (fraction of log N)", 0.05, 0.95, d["target_entropy"], 0.05, key="lab_h")
beta = c2.select_slider("β", [0.05, 0.1, 0.2, 0.5, 1.0, 2.0], value=d["beta"], key="lab_beta")
n_items = c3.select_slider("Support size N", [8, 16, 32, 64, 128], value=d["n_items"], key="lab_n")
steps = c4.select_slider("Training steps", [50, 100, 200, 300], value=d["steps"], key="lab_steps")
c5, c6, c7, c8 = st.columns(4)
rejected = c5.selectbox("Rejected generator π_l", ["did", "uniform", "reference"], key="lab_rej",
                        format_func={"did": "DID-encoding", "uniform": "uniform", "reference": "π_ref"}.get)
loss = c6.selectbox("Loss", ["dpo", "simpo", "ipo"], key="lab_loss", format_func=str.upper)
n_pairs = c7.select_slider("Sampled pairs", [1_000, 10_000, 30_000, 100_000, 262_144], value=d["n_pairs"],
                           key="lab_pairs")
seed = c8.number_input("Seed", 0, 10_000, d["seed"], key="lab_seed")
alignment = st.slider("Target alignment with π_ref (a > 0: q* favours what π_ref already likes)", -1.0, 1.0,
                      d["target_alignment"], 0.1, key="lab_align")

settings = (("target_entropy", float(target_entropy)), ("beta", float(beta)), ("n_items", int(n_items)),
            ("steps", int(steps)), ("rejected", rejected), ("loss", loss), ("n_pairs", int(n_pairs)),
            ("seed", int(seed)), ("target_alignment", float(alignment)))
try:
    result = data.lab(settings)
except ValueError as exc:
    st.error(f"Invalid setting: {exc}")
    widgets.end_page()

history, target = result["history"], result["target"]
last = history.iloc[-1]
m = st.columns(5)
m[0].metric("JS(π, π*) at the end", f"{last['js_target']:.4f}", delta=f"{last['js_target'] - history['js_target'].iloc[0]:.4f}",
            delta_color="inverse")
m[1].metric("target DID entropy H(q*)", f"{target['target_did_entropy']:.3f}")
m[2].metric("DID entropy H(q_π/π_ref)", f"{last['did_entropy']:.3f}")
m[3].metric("Δ log π(y_w), mean", f"{last['logp_chosen'] - history['logp_chosen'].iloc[0]:.3f}",
            help=f"π* would give {target['chosen_logp_shift']:.3f} (= −KL(π_ref‖π*))")
m[4].metric("Δ policy entropy", f"{last['policy_entropy'] - history['policy_entropy'].iloc[0]:.3f}")

left, right = st.columns(2)
with left:
    st.plotly_chart(figures.lines(history, "step", ["js_target", "kl_policy_target", "unseen_mass"], "Distance to π*"),
                    key="lab_js")
    st.plotly_chart(figures.lines(history, "step", ["policy_entropy", "did_entropy"], "Entropies (nats)"), key="lab_ent")
with right:
    st.plotly_chart(figures.lines(history, "step", ["logp_chosen", "logp_rejected"],
                                  "Mean log-likelihood of chosen and rejected"), key="lab_ll")
    st.plotly_chart(figures.lines(result["dists"], "item rank under π_ref", ["π_ref", "π*", "π_l", "π (trained)"],
                                  "Distributions over the support (sorted by π_ref)", "probability"), key="lab_dists")
st.caption("Low-entropy DID concentrates the policy on a few responses (reinforcing); high-entropy DID spreads it "
           "(smoothing). With a DID-encoding π_l, DPO drives JS(π, π*) towards zero; a mismatched π_l does not.")
