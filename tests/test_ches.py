"""CHES (Razin et al. 2024) against a deliberately naive computation, no extra forward, the statistics
over pairs, and the filtered export (top-Q% CHES dropped) loading in TRL's DPOTrainer."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from did_core import engine
from did_core.ches import displaced_by_quantile, drop_top_ches, spearman, spearman_interval, squeezing_curves
from did_core.data import load_preference_data
from did_core.engine import score_batch_models
from did_core.manifest import RunManifest
from did_core.tiny import build_tokenizer, tiny_gpt2, tiny_llama
from did_core.tokenization import tokenize_pairs

TEXT = [("Question: what is the capital?\n", " Paris, the city.", " abc abc the the."),
        ("the ", "ab", "c and a much longer rejected answer here"),
        ("Q\n", " a long answer that goes on and on for a while.", " no"),
        ("Tell me a story.\n", " Once upon a time.", " The end.")]
CONV = [([{"role": "user", "content": p}], [{"role": "assistant", "content": c}],
         [{"role": "assistant", "content": r}]) for p, c, r in TEXT]


@torch.no_grad()
def naive_ches(model, prompt_ids, chosen_ids, rejected_ids) -> tuple[float, float]:
    """The formula applied literally: one full forward per response with `output_hidden_states=True`,
    h_t the last hidden state at each position that predicts a response token, float64 sums."""
    def rows(completion):
        ids = torch.tensor([list(prompt_ids) + list(completion)])
        out = model(input_ids=ids, output_hidden_states=True)
        h = out.hidden_states[-1][0].double()  # (L, H)
        # the head's input: the head applied to it gives the model's logits
        head = model.get_output_embeddings()
        torch.testing.assert_close(head(h.float()), out.logits[0], atol=1e-4, rtol=1e-4)
        p = len(prompt_ids)
        return [h[p - 1 + t] for t in range(len(completion))]  # positions P-1 .. P+T-2

    if not chosen_ids or not rejected_ids:
        return math.nan, math.nan
    hw, hl = rows(chosen_ids), rows(rejected_ids)
    s_plus, s_minus = sum(hw), sum(hl)
    m_plus, m_minus = s_plus / len(hw), s_minus / len(hl)
    ches = float(torch.dot(s_plus, s_minus) - torch.dot(s_plus, s_plus))
    norm = float(torch.dot(m_plus, m_minus) - torch.dot(m_plus, m_plus))
    return ches, norm


def _pairs(tmp_path, conversational: bool, max_length: int | None):
    rows = CONV if conversational else TEXT
    path = tmp_path / ("conv.jsonl" if conversational else "text.jsonl")
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in rows))
    tok = build_tokenizer(merges=[("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")])
    return tok, tokenize_pairs(load_preference_data(str(path)), tok, max_length)


@pytest.mark.parametrize("conversational", [False, True])
@pytest.mark.parametrize("max_length", [None, 18])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ches_equals_naive(tmp_path, conversational, max_length, arch):
    tok, pairs = _pairs(tmp_path, conversational, max_length)
    if max_length is not None:
        assert any(p.chosen_dropped or p.rejected_dropped for p in pairs)  # truncation cut some responses
    model = (tiny_gpt2 if arch == "gpt2" else tiny_llama)(len(tok), seed=5)
    ref, _ = score_batch_models(model, [], pairs, token_level=False, score_reference=True, token_budget=40,
                                device="cpu", dtype=torch.float32)
    checked = 0
    for p, s in zip(pairs, ref, strict=True):
        want, want_norm = naive_ches(model, p.prompt_ids, p.chosen_ids, p.rejected_ids)
        if math.isnan(want):
            assert math.isnan(s.ches) and math.isnan(s.ches_norm)
            continue
        assert s.ches == pytest.approx(want, rel=1e-4), p.pair_id
        assert s.ches_norm == pytest.approx(want_norm, rel=1e-4), p.pair_id
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("strategy", [("tree", True), ("tree", False), ("repeat", True), ("repeat", False),
                                      ("full", True), ("full", False)])
def test_every_path_gives_the_naive_ches(tmp_path, strategy):
    """The bare-head paths reuse the head inputs; the model's-own-logits paths take the last hidden
    states from the same forward."""
    tok, pairs = _pairs(tmp_path, False, 18)
    model = tiny_llama(len(tok), seed=6)
    engine.force_strategy(model, engine.Strategy(*strategy))
    ref, _ = score_batch_models(model, [], pairs, token_level=False, score_reference=True, token_budget=30,
                                device="cpu", dtype=torch.float32)
    for p, s in zip(pairs, ref, strict=True):
        want, want_norm = naive_ches(model, p.prompt_ids, p.chosen_ids, p.rejected_ids)
        if not math.isnan(want):
            assert s.ches == pytest.approx(want, rel=1e-4)
            assert s.ches_norm == pytest.approx(want_norm, rel=1e-4)


def _count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("strategy", [("tree", True), ("full", False)])
def test_ches_adds_no_forward(tmp_path, strategy):
    """One body forward per batch (tree and full layouts), CHES on or off: the same passes as log-probs alone."""
    tok, pairs = _pairs(tmp_path, True, None)
    model, policy = tiny_gpt2(len(tok), seed=7), tiny_gpt2(len(tok), seed=8)
    for m in (model, policy):
        engine.force_strategy(m, engine.Strategy(*strategy))
    ref_body, pol_body = _count_forwards(model.base_model), _count_forwards(policy.base_model)
    budget = 60
    n_batches = len(engine.plan_batches(pairs, budget, (strategy[0],)))
    assert n_batches >= 2
    ref, _ = score_batch_models(model, [], pairs, token_level=False, score_reference=True, token_budget=budget,
                                device="cpu", dtype=torch.float32)
    assert all(s.ches is not None for s in ref)
    assert ref_body[0] == n_batches
    # The policy's pass, for comparison: the same number of forwards, and no CHES.
    _, (pol,) = score_batch_models(model, [policy], pairs, token_level=False, score_reference=False,
                                   token_budget=budget, device="cpu", dtype=torch.float32)
    assert pol_body[0] == n_batches and ref_body[0] == n_batches  # the reference is not run for it
    assert all(s.ches is None for s in pol)


# -- statistics ---------------------------------------------------------------------------------------
def test_spearman_matches_scipy_and_interval_covers():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    y[:10] = y[0]  # ties
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    r = spearman_interval(x, y, n_boot=300, seed=1)
    assert r["lo"] < r["rho"] < r["hi"] and r["n"] == 200
    assert r["method"] == "bootstrap (300 resamples)"
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))


def test_bootstrap_resamples_are_reranked_exactly():
    """The counts-based resampling gives each resample's Spearman ρ as re-ranking it does, ties included."""
    from did_core.ches import _bootstrap_spearman

    rng = np.random.default_rng(3)
    x = rng.integers(0, 7, 300).astype(float)  # heavy ties on both sides
    y = x + rng.integers(0, 5, 300)
    got = _bootstrap_spearman(x, y, 64, np.random.default_rng(1))
    idx = np.random.default_rng(1).integers(0, 300, size=(64, 300))
    want = np.array([spearman(x[i], y[i]) for i in idx])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_interval_method_switches_above_the_bootstrap_limit():
    from did_core.ches import BOOTSTRAP_MAX_N, FISHER_Z, correlations

    rng = np.random.default_rng(4)
    x = rng.normal(size=BOOTSTRAP_MAX_N + 1)
    y = 0.3 * x + rng.normal(size=len(x))
    assert spearman_interval(x[:-1], y[:-1])["method"] == "bootstrap (1,000 resamples)"
    r = spearman_interval(x, y)
    assert r["method"] == FISHER_Z == "Fisher z, Bonett–Wright se" and r["lo"] < r["rho"] < r["hi"]
    assert math.isnan(spearman_interval(x, np.ones_like(x))["lo"])  # a constant side: no ρ, no interval
    pairs = pd.DataFrame({"model": "m", "step": 1, "pair_id": np.arange(len(x)), "ches": x, "logp_chosen": y,
                          "ref_logp_chosen": 0.0, "n_tokens_chosen": 1})
    assert correlations(pairs)["method"].tolist() == [FISHER_Z]


@pytest.mark.parametrize("n, r", [(3000, -0.6), (3000, 0.0), (6000, 0.3), (10000, 0.8)])
def test_fisher_z_interval_agrees_with_the_bootstrap(n, r):
    """Above the bootstrap limit: the Fisher-z / Bonett–Wright endpoints are the 1,000-resample
    bootstrap's to within 0.01 (bivariate normal and a skewed, tied variant)."""
    rng = np.random.default_rng(n + int(10 * r))
    x = rng.normal(size=n)
    y = r * x + math.sqrt(1 - r * r) * rng.normal(size=n)
    if r == 0.3:
        x, y = np.exp(x), np.round(y, 1)  # skewed, ties: ranks do not care about the first
    boot = spearman_interval(x, y, bootstrap_max_n=n)
    fz = spearman_interval(x, y, bootstrap_max_n=n - 1)
    assert boot["method"].startswith("bootstrap") and fz["method"] == "Fisher z, Bonett–Wright se"
    assert fz["rho"] == boot["rho"]
    assert abs(fz["lo"] - boot["lo"]) < 0.01 and abs(fz["hi"] - boot["hi"]) < 0.01


@pytest.mark.parametrize("r", [0.0, 0.5, 0.8])
def test_fisher_z_interval_covers_at_its_nominal_rate(r):
    """400 bivariate-normal samples of n = 2,000: the 95% Fisher-z interval covers the population
    Spearman ρ_s = (6/π)·asin(r/2) in 92–98% of them (seeded)."""
    rho_s = 6 / math.pi * math.asin(r / 2)
    rng = np.random.default_rng(int(100 * r))
    hits = 0
    for _ in range(400):
        x = rng.normal(size=2000)
        y = r * x + math.sqrt(1 - r * r) * rng.normal(size=2000)
        ci = spearman_interval(x, y, bootstrap_max_n=0)
        hits += ci["lo"] <= rho_s <= ci["hi"]
    assert 0.92 <= hits / 400 <= 0.98


def test_ranks_average_ties_like_pandas():
    from did_core.ches import ranks

    a = np.random.default_rng(2).integers(0, 5, (6, 11)).astype(float)  # many ties
    want = np.stack([pd.Series(r).rank(method="average").to_numpy() - 1 for r in a])
    np.testing.assert_array_equal(ranks(a), want)


def test_displaced_by_quantile_naive():
    ches = np.arange(10, dtype=float)
    delta = np.array([1, 1, -1, 1, -1, -1, 1, -1, -1, -1], dtype=float)
    t = displaced_by_quantile(ches, delta, n_bins=5)
    assert list(t["n"]) == [2] * 5
    assert list(t["displaced_share"]) == [0.0, 0.5, 1.0, 0.5, 1.0]


def test_squeezing_curves_naive():
    """Per model and side the mean over pairs of the stored means, NaN skipped; the reference from the
    ref_* columns once per pair, at step 0; rows in any order."""
    rng = np.random.default_rng(4)
    ids = [str(i) for i in range(12)]
    ref = {f"ref_{k}_{s}": dict(zip(ids, rng.uniform(0, 1, 12))) for k in ("top1_prob", "token_entropy")
           for s in ("chosen", "rejected")}
    rows = []
    for step in (10, 20):
        for i in ids[: 12 if step == 10 else 9]:  # the last checkpoint lacks three pairs
            rows.append({"pair_id": i, "model": f"checkpoint-{step}", "step": step,
                         **{c: v[i] for c, v in ref.items()},
                         **{f"{k}_{s}": (np.nan if i == "3" else rng.uniform(0, 1))
                            for k in ("top1_prob", "token_entropy") for s in ("chosen", "rejected")}})
    pairs = pd.DataFrame(rows).sample(frac=1.0, random_state=1)
    got = squeezing_curves(pairs).set_index(["model", "side"])
    for (model, side), r in got.iterrows():
        for k in ("top1_prob", "token_entropy"):
            if model == "reference":
                want = sum(ref[f"ref_{k}_{side}"].values()) / 12
                assert r["step"] == 0
            else:
                vals = [row[f"{k}_{side}"] for row in rows if row["model"] == model and not math.isnan(row[f"{k}_{side}"])]
                want = sum(vals) / len(vals)
                assert r["step"] == int(model.split("-")[1])
            assert r[k] == pytest.approx(want, rel=1e-12)
    assert list(got.index.get_level_values(0)[:2]) == ["reference"] * 2 and len(got) == 6


def test_drop_top_ches_drops_exactly_the_top():
    ches = pd.Series([5.0, 1.0, 9.0, 3.0, 9.0, np.nan, 2.0, 8.0, 0.0, 4.0], index=[str(i) for i in range(10)])
    keep = drop_top_ches(ches, 30)
    assert sorted(ches.index[~keep]) == ["2", "4", "7"]  # 9, 9, 8
    assert drop_top_ches(ches, 0).all() and keep["5"]  # no CHES: kept, never ranked
    with pytest.raises(ValueError):
        drop_top_ches(ches, 101)


# -- the filtered export -----------------------------------------------------------------------------
def _ches_workspace(root, conversational: bool) -> tuple[list[float], list]:
    """A run whose reference store carries known CHES values (written through the real writers)."""
    from did_core.synthetic_ws import SyntheticData
    from did_core.workspace import Workspace

    ws = Workspace(root)
    n = 20
    rng = np.random.default_rng(3)
    ches = list(rng.normal(size=n))
    if conversational:
        rows = [([{"role": "user", "content": f"q{i}"}], [{"role": "assistant", "content": f"yes {i}"}],
                 [{"role": "assistant", "content": f"no {i}"}]) for i in range(n)]
    else:
        rows = [(f"q{i} ", f"yes {i}", f"no {i}") for i in range(n)]
    df = pd.DataFrame({"pair_id": [str(i) for i in range(n)], "prompt": [r[0] for r in rows],
                       "chosen": [r[1] for r in rows], "rejected": [r[2] for r in rows]})
    data = SyntheticData(df, conversational, "test", f"{conversational:d}" * 8 + "ab12cd34")
    ws.write_dataset(data)
    entries = []
    for k, name in enumerate(["reference", "checkpoint-10"]):
        fp = f"{k}{conversational:d}" + "f" * 14
        store = ws.score_store(fp, {"model": {"name": name}, "n_pairs": n, "chunk_size": n})
        pairs = pd.DataFrame({"pair_id": df["pair_id"], "logp_chosen": -3.0 - k, "logp_rejected": -4.0 - 2 * k,
                              "n_tokens_chosen": 3, "n_tokens_rejected": 3, "dropped_chosen": 0, "dropped_rejected": 0,
                              "ches": ches if k == 0 else np.nan, "ches_norm": ches if k == 0 else np.nan})
        store.write_chunk(0, pairs, None)
        store.mark_complete()
        entries.append({"name": name, "path": name, "step": None if k == 0 else 10, "score": fp})
    ws.write_run(RunManifest.from_json({"name": "r", "dataset": {"fingerprint": data.fingerprint,
                                                                 "conversational": conversational},
                                        "beta": 0.1, "reference": entries[0], "checkpoints": entries[1:]}))
    return ches, rows


@pytest.mark.parametrize("conversational", [False, True])
def test_filtered_export_drops_the_top_ches_and_loads_in_dpo_trainer(tmp_path, conversational):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    from did_core.export import export_filtered

    ches, rows = _ches_workspace(tmp_path / "ws", conversational)
    out = export_filtered(tmp_path / "ws", "r", tmp_path / "filtered.jsonl", drop_top_ches=25)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    dropped = set(np.argsort(ches)[-5:])  # 25 % of 20
    assert [r["prompt"] for r in got] == [rows[i][0] for i in range(20) if i not in dropped]
    assert all(r["chosen"] == rows[int(r["pair_id"])][1] for r in got)
    assert set(got[0]) >= {"prompt", "chosen", "rejected"}
    meta = json.loads((tmp_path / "filtered.jsonl.meta.json").read_text())
    assert meta["filter"]["dropped"] == 5 and meta["filter"]["kept"] == 15

    tok = build_tokenizer()
    dataset = load_dataset("json", data_files=str(out), split="train")
    trainer = DPOTrainer(model=tiny_llama(len(tok), seed=0), ref_model=tiny_llama(len(tok), seed=0),
                         args=DPOConfig(output_dir=str(tmp_path / "out"), report_to=[], max_length=64,
                                        per_device_train_batch_size=2, use_cpu=True),
                         train_dataset=dataset, processing_class=tok)
    assert len(trainer.train_dataset) == 15
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)


def test_a_run_scored_before_ches_says_so_everywhere(tmp_path, capsys):
    """Old stores lack the columns: `not_stored` names each with the reason, the pairs export leaves them
    empty and says so (metadata and a CLI note), and the filtered export refuses instead of guessing."""
    from did_core.__main__ import main
    from did_core.errors import InputError
    from did_core.export import export, export_filtered
    from did_core.synthetic_ws import make_synthetic_workspace
    from did_core.workspace import CHES_COLUMNS, SQUEEZING_COLUMNS, Workspace

    make_synthetic_workspace(tmp_path / "old", n_pairs=12, n_checkpoints=1, stored_extras=False)
    make_synthetic_workspace(tmp_path / "new", n_pairs=12, n_checkpoints=1)
    assert Workspace(tmp_path / "new").not_stored("synthetic") == {}
    gone = Workspace(tmp_path / "old").not_stored("synthetic")
    assert set(gone) == {*CHES_COLUMNS, *SQUEEZING_COLUMNS} and all("score the run again" in w for w in gone.values())
    out = export(tmp_path / "old", tmp_path / "p.csv")
    meta = json.loads((tmp_path / "p.csv.meta.json").read_text())
    assert meta["runs"]["synthetic"]["not_stored"]["exact"] == gone
    assert pd.read_csv(out)["ches"].isna().all()
    with pytest.raises(InputError, match="no CHES to filter by"):
        export_filtered(tmp_path / "old", None, tmp_path / "f.jsonl", 10)
    assert main(["export", "--workspace", str(tmp_path / "old"), "--out", str(tmp_path / "q.csv")]) == 0
    assert "note: run synthetic (exact numerics): ches, ches_norm" in capsys.readouterr().err
    assert main(["export", "--workspace", str(tmp_path / "new"), "--out", str(tmp_path / "f.jsonl"),
                 "--kind", "filtered", "--drop-top-ches", "25"]) == 0
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 9
    assert main(["export", "--workspace", str(tmp_path / "new"), "--out", str(tmp_path / "f.jsonl"),
                 "--kind", "filtered"]) == 2  # the flag is required with the kind


def test_the_statistics_do_not_import_torch(tmp_path):
    """The dashboard's CHES and squeezing views call these on a stored run: torch (~1.5 s to import)
    stays out of the server until a tensor function runs."""
    import subprocess
    import sys

    code = f"""
import sys
from did_core.synthetic_ws import make_synthetic_workspace
from did_core.workspace import Workspace
from did_core import ches
make_synthetic_workspace({str(tmp_path)!r}, n_pairs=50, n_checkpoints=2)
pairs = Workspace({str(tmp_path)!r}).pairs("synthetic")
ches.squeezing_curves(pairs); ches.correlations(pairs, n_boot=50)
assert "torch" not in sys.modules, "torch imported"
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
