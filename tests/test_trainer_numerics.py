"""The run's own settings and numerics, checked against TRL 1.16 itself.

A tiny model is trained with TRL's `DPOTrainer` as a user would (bf16 autocast, TRL's default even on
CPU; eval every 2 steps; β 0.37; max length 64 with some pairs cut and two dropped by TRL). Then:
- `score --run` with no flags takes β, max length, precision and eval batch size from the run;
- the `trainer` numerics reproduce the `eval_*` metrics TRL logged in trainer_state.json (≤ 1e-4);
- the `exact` numerics equal TRL's own evaluation with `bf16=False` (≤ 1e-4);
- TRL's evaluate() before train() mixes precisions (policy fp32, reference bf16): what we show is
  documented (docs/NUMERICS.md, "Step 0") and checked here.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from did_core.losses import pair_table
from did_core.score import run_score
from did_core.tiny import build_tokenizer, tiny_llama
from did_core.trainer_numerics import kept_by_trainer, logged_means, trainer_batches
from did_core.workspace import Workspace

trl = pytest.importorskip("trl")

ALPHABET = "abcdeht .?"
BETA, MAX_LENGTH, EVAL_BATCH = 0.37, 64, 4
# TRL's logged eval metric -> our per-pair column
METRICS = {"eval_logps/chosen": "logp_chosen", "eval_logps/rejected": "logp_rejected",
           "eval_rewards/chosen": "reward_chosen", "eval_rewards/rejected": "reward_rejected",
           "eval_rewards/margins": "reward_margin", "eval_rewards/accuracies": "accuracy"}


def _rows(n: int, seed: int, long_prompts: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(lo, hi)))
    rows = [{"prompt": text(3, 20), "chosen": text(2, 50), "rejected": text(2, 50)} for _ in range(n)]
    for i in range(long_prompts):  # prompts that alone fill max_length: TRL drops these pairs
        rows[3 + 4 * i]["prompt"] = text(80, 90)
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _args(out: Path, **kw):
    from trl import DPOConfig
    base = dict(output_dir=str(out), beta=BETA, learning_rate=5e-3, lr_scheduler_type="constant",
                per_device_train_batch_size=4, per_device_eval_batch_size=EVAL_BATCH, max_steps=6,
                save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2, logging_steps=2,
                report_to="none", use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0,
                max_length=MAX_LENGTH, save_only_model=True)
    return DPOConfig(**(base | kw))


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    """A real TRL DPO run: reference/, run/checkpoint-{2,4,6}, train and eval JSONL."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOTrainer

    root = tmp_path_factory.mktemp("trl_run")
    tok = build_tokenizer(alphabet=ALPHABET, merges=[("a", "b"), ("t", "h"), ("th", "e")])
    ref = tiny_llama(len(tok), seed=0)
    ref.save_pretrained(root / "reference")
    tok.save_pretrained(root / "reference")
    train = _rows(24, 1)
    evals = _rows(14, 2, long_prompts=2)
    _write(root / "train.jsonl", train)
    data = _write(root / "eval.jsonl", evals)
    args = _args(root / "run")
    assert args.bf16 is True  # TRL 1.16's default, even on CPU: the reason trainer numerics exist
    tokenizer = AutoTokenizer.from_pretrained(root / "reference")
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(root / "reference"), args=args,
                         train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(evals),
                         processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    before = trainer.evaluate()  # before train(): TRL's policy runs fp32, its reference bf16
    trainer.train()
    logged = {h["step"]: h for h in trainer.state.log_history if "eval_loss" in h}
    assert sorted(logged) == [2, 4, 6]
    return {"root": root, "ref": root / "reference", "run": root / "run", "data": data, "logged": logged,
            "before": before, "n_eval": len(trainer.eval_dataset)}


@pytest.fixture(scope="module")
def scored(trl_run, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    stats = run_score(str(trl_run["data"]), str(trl_run["ref"]), run_dir=str(trl_run["run"]), workspace=ws,
                      name="r")
    return ws, stats


def _kept(ws: Path, pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs TRL kept (not dropped by its max_length filter), in dataset order."""
    return pairs[(pairs["n_tokens_chosen"] > 0) | (pairs["n_tokens_rejected"] > 0)].sort_values(
        "pair_id", key=lambda s: s.astype(int))


def test_no_flag_takes_every_setting_from_the_trainer(trl_run, scored):
    ws, stats = scored
    m = Workspace(ws).run("r")
    rs = m.run_settings
    assert rs["beta"] == {"value": BETA, "source": "trainer", "trainer": BETA}
    assert rs["max_length"] == {"value": MAX_LENGTH, "source": "trainer", "trainer": MAX_LENGTH}
    assert rs["precision"]["value"] == "bf16" and rs["precision"]["source"] == "trainer"
    assert rs["eval_batch_size"]["value"] == EVAL_BATCH and rs["eval_batch_size"]["source"] == "trainer"
    assert rs["loss_type"] == {"value": ["sigmoid"], "source": "trainer", "trainer": ["sigmoid"]}
    assert m.beta == BETA and m.settings["max_length"] == MAX_LENGTH
    assert m.overrides == () and stats.overrides == ()
    # bf16 trainer -> both numerics by default, exact first (what the analysis pages show)
    assert m.numerics == ("exact", "trainer") and stats.numerics == ("exact", "trainer")
    assert m.extra["truncation"]["fully_truncated_pairs"] == 2
    assert trl_run["n_eval"] == 12  # TRL dropped the two pairs whose prompt fills max_length


def _derived(ws, run: str, numerics: str | None = None) -> pd.DataFrame:
    """The run's stored pairs with every derived column at its own settings (losses.pair_table)."""
    w = Workspace(ws)
    return pair_table(w.pairs(run, numerics), w.run_settings(w.run(run)).settings)


@pytest.mark.parametrize("step", [2, 4, 6])
def test_trainer_numerics_reproduce_trls_logged_metrics(trl_run, scored, step):
    ws, _ = scored
    pairs = _derived(ws, "r", "trainer")
    kept = _kept(ws, pairs[pairs["model"] == f"checkpoint-{step}"])
    assert len(kept) == trl_run["n_eval"]
    logged = trl_run["logged"][step]
    ours = logged_means(kept.astype({"accuracy": float}), EVAL_BATCH, list(METRICS.values()))
    for key, col in METRICS.items():
        assert ours[col] == pytest.approx(logged[key], abs=1e-4), key
    # Trainer.evaluate weighs each batch's loss by its size: the plain mean over pairs
    assert kept["loss"].mean() == pytest.approx(logged["eval_loss"], abs=1e-4)
    # and the exact numbers are measurably not what TRL logged (else this test proves nothing)
    exact = Workspace(ws).pairs("r", "exact")
    exact = _kept(ws, exact[exact["model"] == f"checkpoint-{step}"])
    diff = np.abs(exact["logp_chosen"].to_numpy() - kept["logp_chosen"].to_numpy()).max()
    assert diff > 1e-4


def test_exact_numerics_equal_trl_evaluated_in_float32(trl_run, scored, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOTrainer

    ws, _ = scored
    evals = [json.loads(line) for line in trl_run["data"].read_text().splitlines()]
    pairs = _derived(ws, "r", "exact")
    for step in (2, 6):
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(trl_run["run"] / f"checkpoint-{step}"),
            ref_model=AutoModelForCausalLM.from_pretrained(trl_run["ref"]), args=_args(tmp_path / "e", bf16=False),
            train_dataset=Dataset.from_list(evals[:4]), eval_dataset=Dataset.from_list(evals),
            processing_class=AutoTokenizer.from_pretrained(trl_run["ref"]))
        trainer.remove_callback(PrinterCallback)
        got = trainer.evaluate()
        kept = _kept(ws, pairs[pairs["model"] == f"checkpoint-{step}"]).astype({"accuracy": float})
        ours = logged_means(kept, EVAL_BATCH, list(METRICS.values()))
        for key, col in METRICS.items():
            assert ours[col] == pytest.approx(got[key], abs=1e-4), (step, key)
        assert kept["loss"].mean() == pytest.approx(got["eval_loss"], abs=1e-4)


def test_trls_step0_evaluation_mixes_precisions(trl_run, scored):
    """TRL's evaluate() before train(): the policy (= the reference's weights) runs in fp32, the
    reference in bf16, so its logged rewards are not 0. We show the reference as step 0 with rewards
    0 in each numerics; TRL's step-0 numbers are exact policy minus trainer reference."""
    ws, _ = scored
    before = trl_run["before"]
    w = Workspace(ws)
    exact = _kept(ws, w.pairs("r", "exact").query("model == 'checkpoint-2'"))
    trainer = _kept(ws, w.pairs("r", "trainer").query("model == 'checkpoint-2'"))
    ref_exact = exact["ref_logp_chosen"].to_numpy()
    ref_trainer = trainer["ref_logp_chosen"].to_numpy()
    assert np.mean(ref_exact) == pytest.approx(before["eval_logps/chosen"], abs=1e-4)
    mixed = BETA * (ref_exact - ref_trainer)
    assert logged_means(pd.DataFrame({"x": mixed}), EVAL_BATCH, ["x"])["x"] == pytest.approx(
        before["eval_rewards/chosen"], abs=1e-4)
    assert abs(before["eval_rewards/chosen"]) > 1e-5  # TRL's step-0 reward really is not zero


def test_trainer_batches_follow_trls_filter():
    class P:  # noqa: D401 - a bare pair
        def __init__(self, n):
            self.prompt_ids = tuple(range(n))
    pairs = [P(n) for n in (3, 10, 4, 10, 5, 6, 7)]
    assert kept_by_trainer(pairs, 10, "keep_start") == [0, 2, 4, 5, 6]
    assert trainer_batches(pairs, 2, 10) == [[0, 2], [4, 5], [6]]
    assert trainer_batches(pairs, 2, None) == [[0, 1], [2, 3], [4, 5], [6]]
    assert kept_by_trainer(pairs, 10, "keep_end") == list(range(7))
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 10.0]})
    assert logged_means(df, 2, ["x"])["x"] == pytest.approx((1.5 + 3.5 + 10.0) / 3)  # not the plain mean 4.0


def test_cli_override_is_recorded_beside_the_trainers_value(trl_run, tmp_path):
    ws = tmp_path / "ws"
    out = subprocess.run(
        [sys.executable, "-m", "did_core", "score", "--data", str(trl_run["data"]), "--ref", str(trl_run["ref"]),
         "--run", str(trl_run["run"]), "--workspace", str(ws), "--name", "o", "--beta", "0.1", "--numerics", "exact",
         "--no-token-level"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "override: β 0.1 given; the trainer used 0.37" in out.stderr
    m = Workspace(ws).run("o")
    assert m.run_settings["beta"] == {"value": 0.1, "source": "override", "trainer": BETA}
    assert m.run_settings["max_length"]["source"] == "trainer"
    assert m.overrides == ("β 0.1 given; the trainer used 0.37",)
    assert m.numerics == ("exact",)
    pairs = _derived(ws, "o")
    np.testing.assert_allclose(pairs["reward_margin"], 0.1 * (pairs["log_margin"] - pairs["ref_log_margin"]))
