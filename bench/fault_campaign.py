"""Fault campaign (issue 6): `kill -9` a scoring job at TEN random moments of its scoring stage; after
each, rerun the same command and check the final results equal an uninterrupted run's, exactly.

    python bench/fault_campaign.py [--pairs 96] [--chunk 4] [--kills 10] [--seed 0] [--delay 0.05]

Prints one row per kill: when it landed (seconds into scoring), the chunks that survived on disk
(verified by sha256, summed over the reference and every checkpoint score), the chunks the rerun
recomputed (pair-chunks: one covers every model), and whether the export is identical. Uses
tests/cli_world.py's tiny world (a reference and a TRL-style run of two checkpoints).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cli_world import build_world  # noqa: E402
from fault_tools import (  # noqa: E402
    chunks_computed,
    cli_env,
    identical,
    kill_during_scoring,
    results,
    run_cli,
    score_argv,
    stored_chunks,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.05, help="extra seconds per chunk (score --chunk-delay)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    n_chunks = -(-a.pairs // a.chunk)
    with tempfile.TemporaryDirectory(prefix="did-faults-") as tmp:
        tmp = Path(tmp)
        import transformers

        transformers.utils.logging.disable_progress_bar()
        world = build_world(tmp / "world", n_pairs=a.pairs)
        env = cli_env(DID_CHUNK_SIZE=a.chunk)
        t0 = time.perf_counter()
        run_cli(score_argv(world, tmp / "baseline"), env=env)
        base_s = time.perf_counter() - t0
        baseline = results(tmp / "baseline")
        # The scoring stage of a slowed job lasts about n_chunks × (compute + delay): time it once.
        kill_during_scoring(score_argv(world, tmp / "probe", "t", "--chunk-delay", str(a.delay)), env,
                            tmp / "probe.jsonl", delay=1e9)
        times = [r["time"] for r in map(json.loads, (tmp / "probe.jsonl").read_text().splitlines())
                 if r.get("stage") == "score"]
        span = times[-1] - times[0]  # first score record to the last chunk written
        print(f"world: {a.pairs} pairs, chunks of {a.chunk} ({n_chunks} per score, 3 scores: reference + 2 "
              f"checkpoints); uninterrupted run {base_s:.1f} s; scoring stage, slowed by {a.delay} s a chunk: {span:.2f} s; kill moments "
              f"uniform in [0, {span:.2f}] s after it starts")
        print(f"{'#':>2}  {'kill at (s)':>11}  {'killed':>6}  {'chunks surviving':>16}  {'pair-chunks recomputed':>22}  "
              f"{'identical':>9}")
        ok = 0
        for k in range(a.kills):
            ws = tmp / f"ws{k}"
            delay = rng.uniform(0.0, span)
            kill = kill_during_scoring(score_argv(world, ws, "t", "--chunk-delay", str(a.delay)), env,
                                       tmp / f"progress{k}.jsonl", delay)
            surviving = sum(stored_chunks(ws).values())
            rerun = run_cli(score_argv(world, ws), env=env)
            same = identical(results(ws), baseline)
            ok += same
            print(f"{k + 1:>2}  {kill['kill_s']:>11.2f}  {'yes' if kill['killed'] else 'no':>6}  "
                  f"{surviving:>9} / {3 * n_chunks:<4}  {chunks_computed(rerun.stdout):>15} / {n_chunks:<4}  "
                  f"{'yes' if same else 'NO':>9}")
        print(f"{ok}/{a.kills} reruns identical to the uninterrupted run")
        return 0 if ok == a.kills else 1


if __name__ == "__main__":
    sys.exit(main())
