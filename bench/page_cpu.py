"""What a full load of each page costs the browser: one headless Chromium, nothing else running,
loads every page's address `--rounds` times (the first round is dropped: caches warm up) and prints
the median wall time (bench/load_test.py's `open_page`: until every chart is drawn) and the CPU
seconds each kind of Chromium process used (renderer, GPU process, browser), from /proc via psutil.

    python bench/page_cpu.py                     # every page, 2,000 pairs x 4 checkpoints
    python bench/page_cpu.py curves margins      # some pages

Where bench/load_test.py says how fast pages open with three browsers and a job on two cores, this
says where the browsers' CPU goes, page by page.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]


def process_kind(proc) -> str:
    """Chromium's process type from its command line (--type=renderer, gpu-process, ...; none: browser)."""
    args = proc.cmdline()
    kind = next((a.split("=", 1)[1] for a in args if a.startswith("--type=")), "browser")
    return "utility" if kind == "utility" else kind


def chromium_cpu() -> collections.Counter:
    """CPU seconds (user + system) so far of this process's Chromium descendants, by process kind."""
    import psutil

    out: collections.Counter = collections.Counter()
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "chrom" in proc.name():
                times = proc.cpu_times()
                out[process_kind(proc)] += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return out


def main() -> int:
    from load_test import CHROMIUM, CHROMIUM_FLAGS, PAGES, open_page

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", help=f"pages to load (default: all of {', '.join(PAGES)})")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--checkpoints", type=int, default=4)
    a = ap.parse_args()
    if unknown := sorted(set(a.pages) - set(PAGES)):
        ap.error(f"unknown pages: {', '.join(unknown)}")
    if not Path(CHROMIUM).exists():
        print(f"chromium not found at {CHROMIUM}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright
    from streamlit_server import serve

    from did_core.synthetic_ws import make_synthetic_workspace

    names = a.pages or list(PAGES)
    with tempfile.TemporaryDirectory(prefix="did-page-cpu-") as tmp:
        ws = Path(tmp) / "ws"
        make_synthetic_workspace(ws, n_pairs=a.pairs, n_checkpoints=a.checkpoints, seed=0, tokens=True)
        with serve(ws) as base, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_page(page, "Example", f"{base}/example?run=synthetic&ckpt=checkpoint-200&example=3")
            got: dict[str, list[tuple[float, collections.Counter]]] = collections.defaultdict(list)
            for _ in range(a.rounds):
                for name in names:
                    before = chromium_cpu()
                    wall = open_page(page, PAGES[name], f"{base}/{'' if name == 'runs' else name}")
                    time.sleep(0.5)  # what the browser does after the page is drawn counts too
                    got[name].append((wall, chromium_cpu() - before))
            browser.close()
    print(f"full page loads, {a.pairs} pairs x {a.checkpoints} checkpoints, median of {a.rounds - 1} "
          f"(seconds; CPU by Chromium process kind)")
    kinds = ("renderer", "gpu-process", "browser", "utility")
    print(f"{'page':<8} {'wall':>6} {'all CPU':>8} " + " ".join(f"{k:>11}" for k in kinds))
    for name in names:
        runs = got[name][1:]
        med = {k: statistics.median(cpu.get(k, 0.0) for _, cpu in runs) for k in kinds}
        total = statistics.median(sum(cpu.values()) for _, cpu in runs)
        print(f"{name:<8} {statistics.median(w for w, _ in runs):>6.2f} {total:>8.2f} "
              + " ".join(f"{med[k]:>11.2f}" for k in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
