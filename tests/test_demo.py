"""The embedded demo: a complete, enumerable language; data deterministic from a seed; a reduced
build that produces real TRL runs, scored, with exact DID entropies (docs/DEMO.md)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from process_state import process_settings

from did_core.demo import DemoConfig, build_settings, demo_summary, exact_did
from did_core.demo_data import make_preference_data, target_world
from did_core.demo_language import (
    Language,
    build_language_tokenizer,
    encode,
    ground_truth_logprobs,
    response_logprobs,
    train_reference,
)
from did_core.lab import did
from did_core.manifest import RunManifest


@pytest.fixture(scope="module")
def small_world():
    lang = Language(n_prompts=4, seed=1)
    tok = build_language_tokenizer(lang)
    model = train_reference(lang, tok, ground_truth_logprobs(lang), steps=40, seed=1)
    return lang, tok, model


def test_language_is_enumerated_completely(small_world) -> None:
    """Language + the ways out of it (L+1 symbols without EOS) = the sampler's whole support: sums to 1."""
    lang, tok, model = small_world
    assert len(lang.responses()) == sum(4**m for m in range(lang.max_len + 1)) == 85
    assert len(set(lang.responses())) == 85 and len(set(lang.prompts())) == 4
    lp = response_logprobs(model, tok, lang)
    assert lp.logp.shape == (4, 85) and lp.cut_logp.shape == (4, 4 ** (lang.max_len + 1))
    torch.testing.assert_close(lp.language_mass + lp.exit_mass, torch.ones(4, dtype=torch.float64), atol=1e-9, rtol=0)
    assert bool((lp.language_mass > 0.5).all())


def test_enumeration_matches_independent_scorer(small_world) -> None:
    """Parity with did_core.sampling (a batched forward per response, over its own enumeration)."""
    from did_core.sampling import enumerate_responses, score_responses

    lang, tok, model = small_world
    lp = response_logprobs(model, tok, lang)
    support = enumerate_responses(len(tok), tok.eos_token_id, lang.max_len + 1)
    syms = encode(tok, lang.symbols)
    ours = [tuple(encode(tok, lang.completion(r))) for r in lang.responses()]
    ours += [tuple(syms[i] for i in p) for p in itertools.product(range(len(syms)), repeat=lang.max_len + 1)]
    assert sorted(ours) == sorted(support)  # the same support, nothing missing or extra
    for i, prompt in enumerate(lang.prompts()[:2]):
        ref = dict(zip(support, score_responses(model, encode(tok, prompt), support)))
        theirs = torch.tensor([ref[t] for t in ours], dtype=torch.float64)
        torch.testing.assert_close(lp.support_logp()[i], theirs, atol=1e-5, rtol=0)


def test_trained_reference_stays_in_language() -> None:
    lang = Language()
    tok = build_language_tokenizer(lang)
    model = train_reference(lang, tok, ground_truth_logprobs(lang), steps=150, seed=0)
    lp = response_logprobs(model, tok, lang)
    assert float(lp.language_mass.min()) > 0.95
    torch.testing.assert_close(lp.language_mass + lp.exit_mass, torch.ones(16, dtype=torch.float64), atol=1e-9,
                               rtol=0)


def test_tokenizer_matches_trl_boundaries() -> None:
    lang = Language()
    tok = build_language_tokenizer(lang)
    assert tok.eos_token_id == tok.pad_token_id == 0 and len(tok) == 5
    prompt, completion = "cab>", lang.completion("bd")
    assert encode(tok, prompt + completion) == encode(tok, prompt) + encode(tok, completion)
    assert encode(tok, lang.completion("")) == [tok.eos_token_id]


def test_preference_data_is_deterministic_from_seed(small_world) -> None:
    lang, tok, model = small_world
    log_ref = torch.log_softmax(response_logprobs(model, tok, lang).logp, -1)
    cfg = DemoConfig.fast(seed=3)
    a, b = make_preference_data(lang, log_ref, cfg), make_preference_data(lang, log_ref, cfg)
    assert a["low"]["rows"] == b["low"]["rows"] and a["high"]["rows"] == b["high"]["rows"]
    c = make_preference_data(lang, log_ref, DemoConfig.fast(seed=4))
    assert c["low"]["rows"] != a["low"]["rows"]
    assert len(a["low"]["rows"]) == len(lang.prompts()) * cfg.pairs_per_prompt
    assert all(r["chosen"] != r["rejected"] and r["chosen"].endswith(">") for r in a["low"]["rows"])
    # Training the reference is deterministic too.
    again = train_reference(lang, tok, ground_truth_logprobs(lang), steps=40, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), again.state_dict().values()))


def test_target_world_encodes_the_did(small_world) -> None:
    """Per prompt: H(q*) as asked, DID(π*‖π_ref) = q*, and the power law for π_l (as in the lab)."""
    lang, tok, model = small_world
    log_ref = torch.log_softmax(response_logprobs(model, tok, lang).logp, -1)
    w = target_world(log_ref, 0.3, 0.5, 0.5, torch.Generator().manual_seed(0))
    h = -(w["log_q"].exp() * w["log_q"]).sum(-1)
    torch.testing.assert_close(h, torch.full_like(h, 0.3 * math.log(85)), atol=1e-6, rtol=0)
    torch.testing.assert_close(did(w["log_target"], log_ref), w["log_q"], atol=1e-9, rtol=0)
    torch.testing.assert_close(did(log_ref, w["log_rejected"]), torch.log_softmax(0.5 * w["log_q"], -1), atol=1e-9,
                               rtol=0)


ROOT = Path(__file__).resolve().parents[1]


def test_build_settings_are_restored_after_an_exception() -> None:
    """Inside: one thread, quiet transformers/datasets, FutureWarnings ignored; after, even when the
    body raises, every setting and every global random state is as before (the body reseeds them all)."""
    import transformers.utils.logging as hf_logging

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a value the block must change and put back
    try:
        before = process_settings()
        with pytest.raises(RuntimeError, match="inside"), build_settings():
            inside = process_settings()
            assert inside["threads"] == 1 and inside["hf_verbosity"] == hf_logging.ERROR
            assert not inside["hf_bars"] and not inside["ds_bars"]
            assert warnings.filters[0][:3] == ("ignore", None, FutureWarning)
            random.seed(1)
            np.random.seed(1)
            torch.manual_seed(1)
            warnings.simplefilter("always")
            raise RuntimeError("inside")
        assert process_settings() == before
    finally:
        torch.set_num_threads(threads)


def test_did_core_does_not_import_matplotlib() -> None:
    """The figure is scripts/demo_figure.py's: no did_core module imports matplotlib, at import or later."""
    found = [f"{p.name}:{i}" for p in sorted((ROOT / "did_core").glob("*.py"))
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.match(r"\s*(import|from)\s+matplotlib\b", line)]
    assert not found
    code = "import sys, did_core.demo; print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def fast_demo(demo_build) -> tuple[Path, float, list]:
    """The session's fast demo build (tests/conftest.py builds it once for every test that reads the demo)."""
    assert demo_build["after"] == demo_build["before"], "build_demo left a process-wide setting changed"
    return demo_build["root"], demo_build["elapsed"], demo_build["seen"]


@pytest.mark.slow
def test_fast_build_writes_trl_runs_scores_and_exact_tables(fast_demo) -> None:
    from did_core.workspace import Workspace

    root, elapsed, seen = fast_demo
    assert elapsed < 60
    demo = root / "demo"
    assert (demo / "models" / "reference" / "config.json").is_file()
    for kind in ("low", "high"):
        rows = [json.loads(line) for line in (demo / "data" / f"{kind}.jsonl").read_text().splitlines()]
        assert set(rows[0]) == {"id", "prompt", "chosen", "rejected"}
        ckpts = sorted((demo / "runs" / kind).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        assert len(ckpts) >= 5
        for ck in ckpts:
            assert (ck / "config.json").is_file() and (ck / "model.safetensors").is_file()
            state = json.loads((ck / "trainer_state.json").read_text())
            assert state["global_step"] == int(ck.name.split("-")[1]) and state["log_history"]
    ws = Workspace(root)
    assert {"demo-low", "demo-high"} <= set(ws.run_names())
    for name, frac in (("demo-low", 0.15), ("demo-high", 0.9)):
        run = ws.run(name)
        assert run.extra["demo"] is True and run.extra["target_entropy"] == frac
        assert len(run.checkpoints) >= 5 and run.beta == pytest.approx(0.5)
        written = json.loads((ws.run_dir(name) / "run.json").read_text())  # the demo's manifest round-trips
        assert run.to_json() == written and RunManifest.from_json(written) == run and "samples" not in written
        pairs = ws.pairs(name)
        assert len(pairs) == 8 * 8 * len(run.checkpoints)
        assert pairs["did_entropy_chosen"].notna().all()  # token-level entropy was on
        table = exact_did(root, name)
        assert len(table) == 8 * len(run.checkpoints)
        assert {"prompt", "model", "step", "exact_did_entropy", "exact_did_entropy_support", "policy_entropy",
                "restricted_entropy", "snis_entropy", "snis_ess", "language_mass"} <= set(table.columns)
        assert np.all(table["exact_did_entropy"] <= math.log(85) + 1e-9)
        assert np.all((table["language_mass"] > 0) & (table["language_mass"] <= 1 + 1e-9))
    stages = {s for s, _, _ in seen}
    assert {"reference", "data", "train low", "train high", "exact low", "done"} <= stages
    assert any(s.startswith("score low") for s in stages)


@pytest.mark.slow
def test_the_demo_lands_run_by_run(demo_build) -> None:
    """Each run is complete in the workspace (scored, with its exact table) before the next one starts
    training, so the Runs page shows the first run while the others are still built."""
    from did_core.demo import DemoConfig, demo_runs

    runs = demo_runs(DemoConfig.fast())
    assert demo_build["ready"] == {f"train {kind}": sorted(name for _, name, _, _ in runs[:i])
                                   for i, (kind, *_) in enumerate(runs)}


@pytest.mark.slow
def test_the_third_run_is_a_beta_sweep_of_the_low_run(fast_demo) -> None:
    """The demo's third run: TRL DPO on the low run's data at another β, so that the cross-run views
    have a pair to line up: same dataset and reference score as demo-low (comparable pair by pair),
    β 0.1 read from the trainer's arguments, its learning rate recorded."""
    from did_core import sweep
    from did_core.demo import sweep_run_name
    from did_core.workspace import Workspace

    root, _, seen = fast_demo
    ws = Workspace(root)
    name = sweep_run_name(DemoConfig.fast())
    assert name == "demo-low-beta0.1" and set(ws.run_names()) == {"demo-low", "demo-high", name}
    run, low = ws.run(name), ws.run("demo-low")
    assert run.run_settings["beta"]["value"] == pytest.approx(0.1) and run.run_settings["beta"]["source"] == "trainer"
    assert sweep.learning_rate(run) == (pytest.approx(5e-4), "trainer")
    assert sweep.why_not_comparable(low, run) is None
    assert sweep.why_not_comparable(ws.run("demo-high"), run) == f"{name} was scored on another dataset (low.jsonl)"
    assert len(exact_did(root, name)) == 8 * len(run.checkpoints)
    assert {"train low-beta0.1", "exact low-beta0.1"} <= {s for s, _, _ in seen}


@pytest.mark.slow
def test_summary_and_figure_script(fast_demo, tmp_path) -> None:
    """demo_summary: per run, step 0 (the reference) then one row per checkpoint; scripts/demo_figure.py
    prints it and draws the figure from it."""
    pytest.importorskip("matplotlib")
    from did_core.workspace import Workspace

    root, _, _ = fast_demo
    s = demo_summary(root)
    ws = Workspace(root)
    for name in ("demo-low", "demo-high"):
        g = s[s["run"] == name]
        steps = [ck.step for ck in ws.run(name).checkpoints]
        assert g["step"].tolist() == [0, *sorted(steps)]
        assert g["snis_entropy"].isna().tolist() == [True] + [False] * len(steps)
        assert g[["logp_chosen", "logp_rejected", "exact_did_entropy", "policy_entropy"]].notna().all().all()
    spec = importlib.util.spec_from_file_location("demo_figure", ROOT / "scripts" / "demo_figure.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "fig" / "demo_contrast.png"
    script.main(["--workspace", str(root), "--figure", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
