"""How fast each dashboard page opens from stored results (the target: < 1 s for 10,000 pairs ×
10 checkpoints, the example inspector < 0.3 s).

    python bench/dashboard_bench.py [--pairs 10000] [--checkpoints 10] [--repeats 5] [--workspace DIR]

Builds a synthetic workspace through the real writers (did_core.synthetic_ws), then times each
page with Streamlit's AppTest: the whole script run, i.e. reading the store, the cached analytics,
building every Plotly figure and serialising the page — everything but the browser's drawing.
"cold": the first open after the server started (every cache cleared before the run); "warm":
opening it again in another session (Streamlit's caches are per server, so shared). The inspector
is also timed on a fresh example each time with the run's tables warm, which is what clicking a
point does. Medians over --repeats.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAGES = ["runs", "curves", "margins", "entropy", "compare", "example", "score", "lab"]


def _timed_open(at, page: str) -> float:
    t0 = time.perf_counter()
    at.switch_page(f"pages/{page}.py").run()
    dt = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workspace", default=None, help="reuse or build here (default: a temporary folder)")
    a = ap.parse_args()

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from did_core.synthetic_ws import make_synthetic_workspace

    ws = Path(a.workspace or tempfile.mkdtemp(prefix="did-bench-"))
    if not (ws / "runs" / "synthetic" / "run.json").is_file():
        t0 = time.perf_counter()
        make_synthetic_workspace(ws, n_pairs=a.pairs, n_checkpoints=a.checkpoints, seed=0, tokens=True)
        print(f"built synthetic workspace {ws}: {a.pairs} pairs x {a.checkpoints} checkpoints "
              f"(+ reference, token rows) in {time.perf_counter() - t0:.1f} s")
    os.environ["DID_WORKSPACE"] = str(ws)
    os.environ["DID_AUTO_DEMO"] = "0"
    os.environ["DID_WARM_UP"] = "0"  # this script times cold and warm caches itself

    def session():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.run()
        return at

    session()  # imports and the lab's first torch call, so "cold" measures the page, not Python start-up
    _timed_open(session(), "lab")
    cold: dict[str, list[float]] = {p: [] for p in PAGES}
    warm: dict[str, list[float]] = {p: [] for p in PAGES}
    fresh_example: list[float] = []
    for r in range(a.repeats):
        for page in PAGES:
            at = session()
            logging.disable(logging.WARNING)  # "No runtime found" notices from clearing outside a server
            st.cache_data.clear()
            st.cache_resource.clear()
            logging.disable(logging.NOTSET)
            cold[page].append(_timed_open(at, page))
            warm[page].append(_timed_open(session(), page))
        at = session()
        at.query_params.update({"run": "synthetic", "ckpt": "checkpoint-500", "example": str(97 * r + 11)})
        fresh_example.append(_timed_open(at, "example"))

    med = statistics.median
    print(f"\npage open time, median of {a.repeats} (AppTest script run; {a.pairs:,} pairs x {a.checkpoints} checkpoints)")
    print(f"{'page':10s} {'cold s':>8s} {'warm s':>8s}  target")
    for page in PAGES:
        target = "< 0.3 s" if page == "example" else "< 1 s"
        print(f"{page:10s} {med(cold[page]):8.3f} {med(warm[page]):8.3f}  {target}")
    print(f"{'example, another pair (run tables warm)':42s} {med(fresh_example):.3f} s  target < 0.3 s")


if __name__ == "__main__":
    main()
