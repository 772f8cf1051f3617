"""Training curves vs a naive per-checkpoint loop; trainer log_history merge with TRL 1.16's metric names."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from did_core.curves import TRAINER_METRICS, checkpoint_curves, curves_wide, merged_curves, trainer_curves
from did_core.losses import pair_table
from did_core.run_settings import RunSettings


def _pairs(seed: int = 0, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ref_w, ref_l = -rng.gamma(3, 5, n), -rng.gamma(3, 5, n)
    nw, nl = rng.integers(1, 20, n), rng.integers(1, 20, n)
    rows = []
    for k, step in enumerate((50, 100, 150)):
        for i in range(n):
            rows.append(dict(pair_id=str(i), model=f"checkpoint-{step}", step=step,
                             logp_chosen=ref_w[i] + rng.normal(-k, 1), logp_rejected=ref_l[i] + rng.normal(-2 * k, 1),
                             ref_logp_chosen=ref_w[i], ref_logp_rejected=ref_l[i], n_tokens_chosen=nw[i],
                             n_tokens_rejected=nl[i], did_entropy_chosen=rng.uniform(0, 2) if i % 7 else np.nan,
                             did_entropy_rejected=rng.uniform(0, 2)))
    return pd.DataFrame(rows)


def _value(long, model, metric, stat):
    v = long[(long.model == model) & (long.metric == metric) & (long.stat == stat)].value
    assert len(v) == 1, (model, metric, stat)
    return v.iloc[0]


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_checkpoint_curves_vs_naive(agg):
    pairs, beta = _pairs(), 0.1
    long = checkpoint_curves(pair_table(pairs, RunSettings(beta=beta), agg))
    assert set(long.source) == {"scored"}
    for model, g in pairs.groupby("model"):
        def s(col, ncol, g=g):
            return [r[col] / max(r[ncol], 1) if agg == "mean" else r[col] for _, r in g.iterrows()]
        lw, ll = s("logp_chosen", "n_tokens_chosen"), s("logp_rejected", "n_tokens_rejected")
        rw, rl = s("ref_logp_chosen", "n_tokens_chosen"), s("ref_logp_rejected", "n_tokens_rejected")
        dw = [a - b for a, b in zip(lw, rw)]
        dl = [a - b for a, b in zip(ll, rl)]
        margins = [beta * (a - b) for a, b in zip(dw, dl)]
        losses = [math.log1p(math.exp(-m)) for m in margins]
        assert _value(long, model, "logp_chosen", "mean") == pytest.approx(sum(lw) / len(lw))
        assert _value(long, model, "log_ratio_rejected", "q25") == pytest.approx(np.quantile(dl, 0.25))
        assert _value(long, model, "reward_margin", "q90") == pytest.approx(np.quantile(margins, 0.9))
        assert _value(long, model, "dpo_loss", "mean") == pytest.approx(sum(losses) / len(losses))
        assert _value(long, model, "log_margin", "std") == pytest.approx(np.std([a - b for a, b in zip(lw, ll)],
                                                                                 ddof=1))
        assert _value(long, model, "accuracy", "mean") == pytest.approx(np.mean([m > 0 for m in margins]))
        assert _value(long, model, "displaced", "mean") == pytest.approx(
            np.mean([a < 0 and b < 0 for a, b in zip(dw, dl)]))
        ent = [x for x in g.did_entropy_chosen if not np.isnan(x)]
        assert _value(long, model, "did_entropy_chosen", "mean") == pytest.approx(np.mean(ent))
        assert long[long.model == model].step.iloc[0] == g.step.iloc[0]
    ref = pairs[pairs.model == "checkpoint-50"]
    div = np.maximum(ref.n_tokens_chosen, 1) if agg == "mean" else 1
    assert _value(long, "reference", "logp_chosen", "mean") == pytest.approx((ref.ref_logp_chosen / div).mean())
    assert (long[long.model == "reference"].step == 0).all()


def test_checkpoint_curves_the_same_whatever_the_row_order():
    """Rows grouped by model (as Workspace.pairs gives them) are cut in place; interleaved rows are
    sorted first: the same curves either way."""
    table = pair_table(_pairs(3), RunSettings(beta=0.1))
    shuffled = table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert not shuffled["model"].equals(table["model"])
    pd.testing.assert_frame_equal(checkpoint_curves(shuffled), checkpoint_curves(table))


def test_sequence_entropy_and_missing_columns():
    pairs = _pairs(1).drop(columns=["did_entropy_chosen", "did_entropy_rejected"])
    seq = pd.DataFrame({"model": ["checkpoint-100"] * 3, "snis_entropy": [1.0, 2.0, 3.0],
                        "restricted_entropy": [0.5, 0.5, 1.1]})
    long = checkpoint_curves(pair_table(pairs, RunSettings(beta=0.1)), sequence_entropy=seq, include_reference=False)
    assert _value(long, "checkpoint-100", "did_entropy_snis", "mean") == pytest.approx(2.0)
    assert long[long.metric == "did_entropy_snis"].step.iloc[0] == 100
    assert not (long.metric == "did_entropy_chosen").any() and "reference" not in set(long.model)


def test_trl_metric_names_are_the_ones_trl_logs():
    spec = importlib.util.find_spec("trl")
    if spec is None or spec.origin is None:
        pytest.skip("trl not installed")
    src = (Path(spec.origin).parent / "trainer" / "dpo_trainer.py").read_text()
    for key in TRAINER_METRICS:
        if key != "loss":
            assert f'["{key}"]' in src, key
    assert 'f"eval_{key}"' in src


def test_trainer_curves_and_merge():
    history = [
        {"loss": 0.69, "grad_norm": 1.0, "learning_rate": 1e-5, "rewards/chosen": 0.0, "rewards/margins": 0.01,
         "logps/chosen": -40.0, "logps/rejected": -42.0, "rewards/accuracies": 0.5, "epoch": 0.1, "step": 50},
        {"eval_loss": 0.6, "eval_rewards/margins": 0.3, "eval_logps/chosen": -41.0, "step": 100},
        {"train_runtime": 12.0, "train_loss": 0.65, "step": 150, "note": "text"},
        {"loss": 0.5},  # no step: skipped
    ]
    t = trainer_curves(history)
    assert set(t.source) == {"trainer_train", "trainer_eval"}
    row = t[(t.metric == "logp_chosen") & (t.source == "trainer_eval")]
    assert row.step.iloc[0] == 100 and row.value.iloc[0] == -41.0
    assert t[(t.metric == "loss") & (t.source == "trainer_train")].value.tolist() == [0.69]
    assert "grad_norm" in set(t.metric) and "note" not in set(t.metric) and len(t[t.step == 150]) == 2
    merged = merged_curves(pair_table(_pairs(), RunSettings(beta=0.1)), history)
    wide = curves_wide(merged)
    assert list(wide.index) == [0.0, 50.0, 100.0, 150.0]
    assert wide.loc[50.0, "trainer_train:logp_chosen:mean"] == -40.0
    assert wide.loc[100.0, "trainer_eval:reward_margin:mean"] == 0.3
    assert wide.loc[100.0, "scored:logp_chosen:mean"] == pytest.approx(
        _value(merged, "checkpoint-100", "logp_chosen", "mean"))
    assert np.isnan(wide.loc[0.0, "trainer_train:logp_chosen:mean"])
    assert merged_curves(pair_table(_pairs().iloc[:0], RunSettings(beta=0.1)), None).empty
