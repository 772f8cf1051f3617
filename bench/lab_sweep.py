"""Sweep the target DID entropy, low to high, in the exact lab; print a table, draw assets/lab_sweep.png.

    python bench/lab_sweep.py [--seeds 5] [--out assets/lab_sweep.png]

For each target entropy (a fraction of log N) and each alignment a of q* with π_ref
(a > 0: q* favours what π_ref already likes; a = 0: independent; a < 0: favours π_ref's tail),
DPO is trained on DID-encoding pairs and the shifts from π_ref are recorded: mean chosen and
rejected log-likelihood, policy entropy, and the learned DID entropy. Dashed lines: the exact
values at π* (where DPO converges with infinite data). Needs matplotlib (plotting only).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from did_core.lab import LabConfig, entropy, run_lab, target_summary

FRACTIONS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
ALIGNMENTS = [-0.8, 0.0, 0.8]


def sweep(seeds: int) -> list[dict]:
    """One row per (alignment, fraction), averaged over seeds."""
    rows = []
    for a in ALIGNMENTS:
        for frac in FRACTIONS:
            acc: dict[str, float] = {}
            for seed in range(seeds):
                res = run_lab(LabConfig(target_entropy=frac, target_alignment=a, seed=seed))
                h, t = res.history, target_summary(res.world)
                up = (res.log_policy[-1, res.chosen] > res.log_policy[0, res.chosen]).double().mean()
                vals = {
                    "d_chosen": float(h["logp_chosen"][-1] - h["logp_chosen"][0]),
                    "d_rejected": float(h["logp_rejected"][-1] - h["logp_rejected"][0]),
                    "d_entropy": float(h["policy_entropy"][-1] - h["policy_entropy"][0]),
                    "did_entropy": float(h["did_entropy"][-1]) / math.log(res.log_policy.shape[1]),
                    "js": float(h["js_target"][-1]),
                    "chosen_up": float(up),
                    "star_d_chosen": t["chosen_logp_shift"],
                    "star_d_entropy": t["target_entropy"] - t["ref_entropy"],
                }
                for k, v in vals.items():
                    acc[k] = acc.get(k, 0.0) + v / seeds
            rows.append({"alignment": a, "target_frac": frac} | acc)
    return rows


def trajectories(frac_low: float = 0.1, frac_high: float = 0.9) -> dict[str, dict[str, list[float]]]:
    """Chosen log-likelihood and policy entropy over steps at a low and a high target entropy (a = 0)."""
    out = {}
    for name, frac in (("low", frac_low), ("high", frac_high)):
        res = run_lab(LabConfig(target_entropy=frac))
        out[f"{name} (H(q*)={frac:.1f}·log N)"] = res.table()
    return out


def plot(rows: list[dict], traj: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colors = {-0.8: "tab:red", 0.0: "tab:gray", 0.8: "tab:blue"}
    labels = {-0.8: "q* favours π_ref's tail (a=−0.8)", 0.0: "q* independent of π_ref (a=0)",
              0.8: "q* favours π_ref's modes (a=+0.8)"}
    panels = [(axes[0, 0], "d_chosen", "star_d_chosen", "Δ mean log π(y_w)  (chosen)"),
              (axes[0, 1], "d_entropy", "star_d_entropy", "Δ policy entropy H(π)  (nats)")]
    for ax, key, star, title in panels:
        for a in ALIGNMENTS:
            sel = [r for r in rows if r["alignment"] == a]
            x = [r["target_frac"] for r in sel]
            ax.plot(x, [r[key] for r in sel], "o-", color=colors[a], label=labels[a])
            ax.plot(x, [r[star] for r in sel], "--", color=colors[a], alpha=0.6)
        ax.axhline(0, color="black", lw=0.7)
        ax.set_xlabel("target DID entropy H(q*) / log N")
        ax.set_title(title)
    axes[0, 0].legend(fontsize=8)
    ax = axes[1, 0]
    for a in ALIGNMENTS:
        sel = [r for r in rows if r["alignment"] == a]
        ax.plot([r["target_frac"] for r in sel], [r["did_entropy"] for r in sel], "o-", color=colors[a])
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("target DID entropy H(q*) / log N")
    ax.set_ylabel("learned H(q_{π/π_ref}) / log N")
    ax.set_title("DID entropy learned by DPO vs target")
    ax = axes[1, 1]
    for (name, tab), c in zip(traj.items(), ("tab:purple", "tab:green")):
        ax.plot(tab["step"], tab["logp_chosen"], color=c, label=f"{name}: log π(y_w)")
        ax.plot(tab["step"], tab["policy_entropy"], color=c, ls="--", label=f"{name}: H(π)")
    ax.set_xlabel("DPO step")
    ax.set_title("trajectories (a=0, seed 0)")
    ax.legend(fontsize=8, loc="center right")
    fig.suptitle("Exact lab: DPO on DID-encoding pairs, N=32, β=0.1, 262144 pairs, mean of seeds (dashed: exact π*)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("assets/lab_sweep.png"))
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = sweep(args.seeds)
    print(f"{'a':>5} {'H*/logN':>7} {'Δchosen':>8} {'Δchosen*':>8} {'%up':>5} {'Δrej':>7} {'ΔH(π)':>7} "
          f"{'ΔH*':>7} {'H_did':>6} {'JS':>7}")
    for r in rows:
        print(f"{r['alignment']:>5.1f} {r['target_frac']:>7.2f} {r['d_chosen']:>8.3f} {r['star_d_chosen']:>8.3f} "
              f"{100 * r['chosen_up']:>5.1f} {r['d_rejected']:>7.3f} {r['d_entropy']:>7.3f} "
              f"{r['star_d_entropy']:>7.3f} {r['did_entropy']:>6.3f} {r['js']:>7.4f}")
    print(f"sweep: {len(rows) * args.seeds} runs in {time.perf_counter() - t0:.1f} s; "
          f"reference entropy (seed 0) {float(entropy(run_lab(LabConfig(steps=0)).world.log_ref)):.3f} nats")
    plot(rows, trajectories(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
