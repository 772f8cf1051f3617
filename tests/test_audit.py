"""The precision audit (did_core/audit.py): how far the trainer's numbers are from the exact ones, per pair
and per checkpoint, against a naive loop. The tokenization audit is tests/test_token_audit.py's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from did_core import audit


def test_precision_audit_against_a_naive_loop():
    rng = np.random.default_rng(0)
    n = 30
    rows = []
    for model, step in (("c-1", 1), ("c-2", 2)):
        for i in range(n):
            rows.append({"pair_id": str(i), "model": model, "step": step, "n_tokens_chosen": 3, "n_tokens_rejected": 4,
                         **{c: -abs(rng.normal(20, 5)) for c in ("logp_chosen", "logp_rejected", "ref_logp_chosen",
                                                               "ref_logp_rejected")}})
    exact = pd.DataFrame(rows)
    trainer = exact.copy()
    for c in ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected"):
        trainer[c] += rng.normal(0, 0.1, len(trainer))
    for df in (exact, trainer):  # the columns audit_pairs reads from a losses.pair_table, by hand
        for s in ("chosen", "rejected"):
            df[f"log_ratio_{s}"] = df[f"logp_{s}"] - df[f"ref_logp_{s}"]
        df["reward_margin"] = 0.1 * ((df.logp_chosen - df.ref_logp_chosen) - (df.logp_rejected - df.ref_logp_rejected))
    per_pair = audit.audit_pairs(exact, trainer.sample(frac=1, random_state=1))  # order must not matter
    summary = audit.audit_summary(per_pair)
    assert list(summary["model"]) == ["c-1", "c-2"]
    for model, row in summary.set_index("model").iterrows():
        e, t = exact[exact.model == model].set_index("pair_id"), trainer[trainer.model == model].set_index("pair_id")
        t = t.loc[e.index]
        d_logp = [abs(t.at[i, f"logp_{s}"] - e.at[i, f"logp_{s}"]) for i in e.index for s in ("chosen", "rejected")]
        d_ratio = [abs((t.at[i, f"logp_{s}"] - t.at[i, f"ref_logp_{s}"]) - (e.at[i, f"logp_{s}"] - e.at[i, f"ref_logp_{s}"]))
                   for i in e.index for s in ("chosen", "rejected")]
        d_margin = [abs(t.at[i, "reward_margin"] - e.at[i, "reward_margin"]) for i in e.index]
        signal = [abs(e.at[i, "reward_margin"]) for i in e.index]
        assert row["median Δ log-prob"] == pytest.approx(float(np.median(d_logp)))
        assert row["median Δ log-ratio"] == pytest.approx(float(np.median(d_ratio)))
        assert row["max Δ reward margin"] == pytest.approx(max(d_margin))
        assert row["margin_error_share"] == pytest.approx(float(np.median(d_margin) / np.median(signal)))
