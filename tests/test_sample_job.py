"""`python -m did_core sample`: stored once, reused, and equal to a naive rescoring of each sample."""

from __future__ import annotations

import json
import math
import subprocess

import torch
from cli_world import build_world
from transformers import AutoModelForCausalLM

from did_core.__main__ import main
from did_core.manifest import RunManifest
from did_core.sample_job import read_samples, sampled_entropy_summary
from did_core.workspace import Workspace


def _naive(model, prompt, response) -> float:
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(float(logp[len(prompt) + t - 1, tok]) for t, tok in enumerate(response))


def test_sample_store_reuse_and_naive_parity(tmp_path):
    w = build_world(tmp_path / "w", n_pairs=5)
    ws = tmp_path / "ws"
    assert main(["score", "--data", str(w["data"]), "--ref", str(w["ref"]), "--run", str(w["run"]),
                 "--workspace", str(ws), "--name", "r", "--no-token-level"]) == 0
    scored = json.loads((ws / "runs" / "r" / "run.json").read_text())
    assert "samples" not in scored and Workspace(ws).run("r").samples == ()
    args = ["sample", "--workspace", str(ws), "--run", "r", "--k", "4", "--limit", "3", "--max-new-tokens", "5"]
    gone = subprocess.Popen(["true"])
    gone.wait()
    (ws / "samples").mkdir()
    orphan = ws / "samples" / f".x.parquet.{gone.pid}.0a1b2c3d.tmp"  # what a job killed mid-write leaves
    orphan.write_bytes(b"x")
    assert main(args) == 0
    assert not orphan.exists()
    files = sorted((ws / "samples").glob("*.parquet"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    assert main(args) == 0 and files[0].stat().st_mtime_ns == mtime  # reused, not resampled
    # the sampled run's manifest: the scored one plus one `samples` record, and it round-trips unchanged
    written = json.loads((ws / "runs" / "r" / "run.json").read_text())
    m = Workspace(ws).run("r")
    assert m.to_json() == written and RunManifest.from_json(written) == m
    assert written == scored | {"samples": written["samples"]}
    assert [(e["model"], e["samples"], e["k"]) for e in m.samples] == [("checkpoint-4", files[0].stem, 4)]
    df = read_samples(ws, "r")
    assert len(df) == 3 * 4 and set(df["model"]) == {"checkpoint-4"}
    pol = AutoModelForCausalLM.from_pretrained(w["run"] / "checkpoint-4").eval()
    ref = AutoModelForCausalLM.from_pretrained(w["ref"]).eval()
    from did_core.data import load_preference_data
    from did_core.tokenization import tokenize_pairs

    prompts = {p.pair_id: p.prompt_ids for p in tokenize_pairs(load_preference_data(str(w["data"])),
                                                                w["tokenizer"], 1024)}
    for row in df.head(6).itertuples():
        d = _naive(pol, prompts[row.pair_id], row.response_ids) - _naive(ref, prompts[row.pair_id], row.response_ids)
        assert abs(row.log_ratio - d) < 1e-4
        assert row.n_tokens <= 5
    summ = sampled_entropy_summary(df, n_boot=50)
    assert len(summ) == 3
    assert ((summ["restricted_entropy"] >= -1e-9) & (summ["restricted_entropy"] <= math.log(4) + 1e-9)).all()
    assert (summ["restricted_ci_low"] <= summ["restricted_ci_high"]).all()


def test_sample_unknown_checkpoint_is_an_input_error(tmp_path, capsys):
    w = build_world(tmp_path / "w", n_pairs=3, steps=(2,))
    ws = tmp_path / "ws"
    main(["score", "--data", str(w["data"]), "--ref", str(w["ref"]), "--run", str(w["run"]), "--workspace", str(ws),
          "--name", "r", "--no-token-level"])
    capsys.readouterr()
    assert main(["sample", "--workspace", str(ws), "--run", "r", "--model", "checkpoint-999"]) == 2
    assert capsys.readouterr().err.startswith("error: run 'r' has no checkpoint 'checkpoint-999'")
