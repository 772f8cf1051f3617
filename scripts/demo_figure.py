"""The demo's contrast figure: the low and the high run side by side, six panels, step 0 = the reference.

    python scripts/demo_figure.py [--workspace DIR] [--figure assets/demo_contrast.png]

Prints `did_core.demo.demo_summary(DIR)` (the per-(run, step) means) and, with --figure, draws them
there with matplotlib; dotted lines are the targets (π*, q*). Build the workspace first:
`python -m did_core demo --workspace DIR` (docs/DEMO.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TITLES = ["mean log-likelihood of chosen / rejected (nats)", "policy entropy over the language (nats)",
          "mass on the language", "exact DID entropy over the language (nats)",
          "DID entropy over the sampler's support: exact vs K = 32 samples", "JS(π, π*) over the language"]
COLORS = {"demo-low": "tab:blue", "demo-high": "tab:orange"}


def plot_demo_contrast(summary: pd.DataFrame, out: str | Path) -> None:
    """Six panels, both runs, step 0 = reference; dotted lines are the targets (π*, q*)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(16, 8.5))
    ax = ax.ravel()
    for name, g in summary.groupby("run", sort=False):
        c, lab = COLORS.get(name, "gray"), f"{name} (H(q*) = {g['target_entropy'].iloc[0]:.2f}·log R)"
        ax[0].plot(g["step"], g["logp_chosen"], "o-", color=c, label=f"{lab}: chosen")
        ax[0].plot(g["step"], g["logp_rejected"], "s--", color=c, alpha=0.6, label=f"{name}: rejected")
        ax[1].plot(g["step"], g["policy_entropy"], "o-", color=c, label=lab)
        ax[1].axhline(g["target_policy_entropy"].iloc[0], color=c, ls=":", label=f"{name}: H(π*)")
        ax[2].plot(g["step"], g["language_mass"], "o-", color=c, label=lab)
        ax[3].plot(g["step"], g["exact_did_entropy"], "o-", color=c, label=f"{name}: exact")
        ax[3].axhline(g["target_did_entropy"].iloc[0], color=c, ls=":", label=f"{name}: H(q*)")
        ax[4].plot(g["step"], g["exact_did_entropy_support"], "o-", color=c, label=f"{name}: exact (support)")
        ax[4].plot(g["step"], g["snis_entropy"], "^--", color=c, alpha=0.8, label=f"{name}: SNIS estimate")
        ax[4].plot(g["step"], g["restricted_entropy"], "x:", color=c, alpha=0.8, label=f"{name}: H_S over K")
        ax[5].plot(g["step"], g["js_target"], "o-", color=c, label=lab)
    for a, t in zip(ax, TITLES):
        a.set_title(t, fontsize=10)
        a.set_xlabel("DPO step (0 = reference)")
        a.legend(fontsize=7)
    fig.suptitle("Demo: TRL DPO on DID-encoding pairs at a low vs a high target DID entropy "
                 "(means over 16 prompts / 512 pairs; dotted: targets)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="workspace", help="a built demo workspace (default: ./workspace)")
    ap.add_argument("--figure", help="write the contrast figure here (PNG)")
    a = ap.parse_args(argv)
    from did_core.demo import demo_summary

    s = demo_summary(a.workspace)
    print(s.round(3).to_string(index=False))
    if a.figure:
        plot_demo_contrast(s, a.figure)
        print(f"wrote {a.figure}")


if __name__ == "__main__":
    main()
