"""Peak resident memory of scoring with a Qwen-sized vocabulary, for tests/test_memory.py (run it in a
process of its own with MALLOC_MMAP_THRESHOLD_=65536, so that resident memory tracks live tensors).
Prints one JSON line: {"engine", "naive", "whole_batch"} in bytes."""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from did_core.engine import plan_batches, score_batch_models  # noqa: E402
from did_core.tiny import tiny_llama  # noqa: E402
from did_core.tokenization import TokenizedPair  # noqa: E402

VOCAB = 151_936
BUDGET = 4096


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_above_start(fn) -> int:
    """Peak resident bytes above the level before `fn`, sampled every millisecond."""
    gc.collect()
    base, peak, stop = rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        stop.set()
        t.join()
    return max(0, peak[0] - base)


def main() -> None:
    ref, pol = tiny_llama(VOCAB, hidden=64, seed=0), tiny_llama(VOCAB, hidden=64, seed=1)
    rng = random.Random(0)

    def ids(n):
        return tuple(rng.randrange(VOCAB) for _ in range(n))

    pairs = [TokenizedPair(f"p{i}", ids(40), ids(120), ids(110), 0, 0) for i in range(8)]
    score_batch_models(ref, [pol], pairs[:2], token_level=True, score_reference=True, token_budget=BUDGET)  # warm-up
    batch = max(plan_batches(pairs, BUDGET), key=len)
    whole = sum(len(pairs[i].chosen_ids) + len(pairs[i].rejected_ids) for i in batch) * VOCAB * 4
    out = {}

    def engine():
        r, (p,) = score_batch_models(ref, [pol], pairs, token_level=True, score_reference=True, token_budget=BUDGET)
        assert len(r) == len(p) == len(pairs) and p[0].chosen.did_entropy is not None

    out["engine"] = peak_above_start(engine)
    rows = torch.tensor([list(pairs[i].prompt_ids + pairs[i].chosen_ids) for i in batch[:max(1, len(batch) // 2)]])
    with torch.inference_mode():
        out["naive"] = peak_above_start(lambda: pol(input_ids=rows).logits.sum())
    out["whole_batch"] = whole
    print(json.dumps(out))


if __name__ == "__main__":
    main()
