"""How fast each dashboard page opens from stored results (the target: < 1 s for 10,000 pairs ×
10 checkpoints, the example inspector < 0.3 s; issue 17: every page < 1 s warm, < 1.5 s cold at
60,000 pairs × 20 checkpoints with ~250 tokens a response, a full page load in Chromium < 2 s).

    python bench/dashboard_bench.py [--pairs 10000] [--checkpoints 10] [--repeats 5] [--workspace DIR]
    python bench/dashboard_bench.py --pairs 60000 --checkpoints 20 --tokens-mean 250 --workspace /tmp/ws60k \
        [--browser] [--profile margins,example-new] [--pages margins,example]

Builds a synthetic workspace through the real writers (did_core.synthetic_ws), then times each
page with Streamlit's AppTest: the whole script run, i.e. reading the store, the cached analytics,
building every Plotly figure and serialising the page — everything but the browser's drawing.
"cold": the first open after the server started (every cache cleared before the run); "warm":
opening it again in another session (Streamlit's caches are per server, so shared). The inspector
is also timed on a fresh example each time with the run's tables warm (one example open first: the
last page's cold open cleared them), which is what clicking a point does. Medians over --repeats,
each page's wall time beside the process's CPU time (all threads): on a loaded machine the wall
time also counts other processes' turns, the CPU time does not.

`--tokens-mean N`: realistic response lengths (synthetic_ws lengths="lognormal": lognormal with mean
N, capped at --max-tokens, Zipf token ids over a 32,000-piece vocabulary), written chunk by chunk.
Without it, the 12-token uniform workspace the targets were first measured on.

Also printed: the workspace's bytes on disk per scored token and what one token file stores (column
types, encodings, compression, row groups); this process's resident memory after every page ran
(AppTest runs the pages in-process, so it holds what the server's caches would). `--browser`: a
`streamlit run` server (DID_WARM_UP=0) and headless Chromium: a full load of each page's address,
first (its views cold) and again (warm), and the server's resident memory (VmRSS, peak VmHWM).
`--profile P,...`: cProfile of a cold open of each page P ("example-new": the inspector on a fresh
pair, run tables warm) in the script runner's thread, the top functions by cumulative time
(`--repeats 0`: only the profiles).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
PAGES = ["runs", "curves", "margins", "entropy", "compare", "example", "score", "lab"]
FLOAT32_COLUMNS = ("logp", "did_entropy", "top1_prob", "token_entropy")
"""The token file's float32 values: 4 bytes each is what they need uncompressed."""


CPU: dict[str, list[float]] = {}
"""label -> the process CPU seconds of each timed open (all threads: on a loaded machine the wall time
counts other processes' turns too, the CPU time does not)."""


def _timed_open(at, page: str, label: str | None = None) -> float:
    t0, c0 = time.perf_counter(), time.process_time()
    at.switch_page(f"pages/{page}.py").run()
    dt = time.perf_counter() - t0
    CPU.setdefault(label or page, []).append(time.process_time() - c0)
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return dt


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc (NaN elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]
    except (OSError, KeyError, ValueError):
        return float("nan"), float("nan")


def storage_report(ws: Path) -> list[str]:
    """Bytes on disk per scored token, by kind of file, and what one token file stores (its footer only)."""
    import pyarrow.parquet as pq

    sizes: dict[str, int] = {}
    token_rows, token_files = 0, []
    for path in ws.rglob("*"):
        if not path.is_file():
            continue
        kind = ("token files" if path.name.endswith(".tokens.parquet") else "pair chunks" if path.name.endswith(
            ".pairs.parquet") else "merged pairs" if path.name == "pairs.parquet" else "datasets"
                if path.parent.name == "datasets" else "other (json)")
        sizes[kind] = sizes.get(kind, 0) + path.stat().st_size
        if kind == "token files":
            token_rows += pq.ParquetFile(path).metadata.num_rows
            token_files.append(path)
    total = sum(sizes.values())
    lines = [f"\nworkspace on disk: {total / 1e9:.2f} GB, {token_rows:,} scored token rows in {len(token_files)} files"]
    for kind, b in sorted(sizes.items(), key=lambda kv: -kv[1]):
        per = f"{b / token_rows:6.2f} B/token" if token_rows else ""
        lines.append(f"  {kind:14s} {b / 1e9:8.3f} GB  {per}")
    if token_rows:
        lines.append(f"  {'all':14s} {total / 1e9:8.3f} GB  {total / token_rows:6.2f} B/token  (float32 values "
                     f"alone: {4 * len(FLOAT32_COLUMNS)} B/token uncompressed)")
        lines += token_file_breakdown(max(token_files, key=lambda p: p.stat().st_size))
    return lines


def token_file_breakdown(path: Path) -> list[str]:
    """Per column of one token file: type, encodings, compression, compressed bytes per row; row groups."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    md = pf.metadata
    rows = [md.row_group(r).num_rows for r in range(md.num_row_groups)]
    keys = pf.read(columns=["pair_id", "side"])
    pid, side = (keys[c].to_numpy(zero_copy_only=False) for c in ("pair_id", "side"))
    runs = int(((pid[1:] != pid[:-1]) | (side[1:] != side[:-1])).sum()) + 1 if len(pid) else 0
    together = int((pid[1:] != pid[:-1]).sum()) + 1 == len(set(pid)) if len(pid) else True
    lines = [f"one token file ({path.parent.name}/{path.name}, the largest): {md.num_rows:,} rows, "
             f"{path.stat().st_size / 1e6:.1f} MB, {len(rows)} row group(s) of {min(rows):,}-{max(rows):,} rows; "
             f"{len(set(pid)):,} pairs in {runs:,} runs of rows (one per pair and side: each pair's rows "
             f"{'together' if together else 'apart'}); "
             f"pair_id stored once per token row (dictionary-encoded), min/max statistics per row group: "
             f"{md.row_group(0).column(0).is_stats_set}"]
    lines.append(f"  {'column':14s} {'type':22s} {'compr.':6s} {'B/row':>6s}  encodings")
    for i, field in enumerate(pf.schema_arrow):
        comp = sum(md.row_group(r).column(i).total_compressed_size for r in range(md.num_row_groups))
        col = md.row_group(0).column(i)
        lines.append(f"  {field.name:14s} {f'{field.type} ({col.physical_type})':22s} {col.compression:6s} "
                     f"{comp / md.num_rows:6.2f}  {','.join(col.encodings)}")
    return lines


def profile(fn, label: str, top: int = 40) -> None:
    """cProfile `fn`'s script run: in the script runner's thread (AppTest runs the page there)."""
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    prof, run_script = cProfile.Profile(), ScriptRunner._run_script

    def profiled(self, rerun_data):
        prof.enable()
        try:
            return run_script(self, rerun_data)
        finally:
            prof.disable()

    ScriptRunner._run_script = profiled
    try:
        dt = fn()
    finally:
        ScriptRunner._run_script = run_script
    print(f"\n--- profile: {label} ({dt:.3f} s under the profiler; by cumulative time: the project's "
          f"functions, then pyarrow's, pandas' and plotly's) ---")
    for where, n in (("/work/main/|did_core|did_ui|pages/", top), ("pyarrow|pandas|plotly|numpy", top // 2)):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(where, n)
        print("\n".join(line for line in out.getvalue().splitlines()[7:] if line.strip()))


def build(a: argparse.Namespace) -> Path:
    from did_core.synthetic_ws import make_synthetic_workspace

    ws = Path(a.workspace or tempfile.mkdtemp(prefix="did-bench-"))
    if not (ws / "runs" / "synthetic" / "run.json").is_file():
        t0 = time.perf_counter()
        lengths = {} if a.tokens_mean is None else {"lengths": "lognormal", "mean_tokens": a.tokens_mean,
                                                    "max_tokens": a.max_tokens}
        make_synthetic_workspace(ws, n_pairs=a.pairs, n_checkpoints=a.checkpoints, seed=0, tokens=True,
                                 chunk_size=a.chunk_size, token_models=a.token_models, **lengths)
        print(f"built synthetic workspace {ws}: {a.pairs} pairs x {a.checkpoints} checkpoints "
              f"(+ reference, token rows) in {time.perf_counter() - t0:.1f} s")
    return ws


def apptest(a: argparse.Namespace, ckpt: str) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    def session():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()
        return at

    def clear() -> None:
        logging.disable(logging.WARNING)  # "No runtime found" notices from clearing outside a server
        st.cache_data.clear()
        st.cache_resource.clear()
        logging.disable(logging.NOTSET)

    def fresh_session(r: int):
        at = session()
        at.query_params.update({"run": "synthetic", "ckpt": ckpt, "example": str((97 * r + 11) % a.pairs)})
        return at

    session()  # imports and the lab's first torch call, so "cold" measures the page, not Python start-up
    _timed_open(session(), "lab")
    pages = a.pages.split(",") if a.pages else PAGES
    cold: dict[str, list[float]] = {p: [] for p in pages}
    warm: dict[str, list[float]] = {p: [] for p in pages}
    fresh_example: list[float] = []
    for _ in range(a.repeats):
        for page in pages:
            at = session()
            clear()
            cold[page].append(_timed_open(at, page, f"{page} cold"))
            warm[page].append(_timed_open(session(), page, f"{page} warm"))
    _timed_open(session(), "example", "warming")  # the run's tables (the last page's cold open cleared them)
    for r in range(a.repeats):
        fresh_example.append(_timed_open(fresh_session(r), "example", "example new"))
    rss, hwm = rss_mb()
    if a.repeats:
        report(a, pages, cold, warm, fresh_example, rss, hwm)
    for label in (a.profile.split(",") if a.profile else []):
        if label == "example-new":
            _timed_open(session(), "example", "warming")
            at = fresh_session(a.repeats + 1)
            profile(lambda at=at: _timed_open(at, "example"), "example, another pair, run tables warm")
        else:
            at = session()
            clear()
            profile(lambda at=at, label=label: _timed_open(at, label), f"{label}, cold")


def report(a: argparse.Namespace, pages: list[str], cold: dict, warm: dict, fresh_example: list[float], rss: float,
           hwm: float) -> None:
    med = statistics.median
    print(f"\npage open time, median of {a.repeats} (AppTest script run; {a.pairs:,} pairs x {a.checkpoints} checkpoints"
          f"{'' if a.tokens_mean is None else f', ~{a.tokens_mean} tokens a response'}; load {os.getloadavg()[0]:.2f})")
    print(f"{'page':10s} {'cold s':>8s} {'warm s':>8s} {'cold CPU':>9s} {'warm CPU':>9s}  {'cold, each':24s} target")
    for page in pages:
        target = "< 0.3 s" if page == "example" else "< 1 s warm, < 1.5 s cold"
        runs = " ".join(f"{t:.2f}" for t in cold[page])
        print(f"{page:10s} {med(cold[page]):8.3f} {med(warm[page]):8.3f} {med(CPU[f'{page} cold']):9.3f} "
              f"{med(CPU[f'{page} warm']):9.3f}  {runs:24s} {target}")
    print(f"{'example, another pair (run tables warm)':42s} {med(fresh_example):.3f} s, CPU {med(CPU['example new']):.3f} s "
          f"({' '.join(f'{t:.2f}' for t in fresh_example)})  target < 0.3 s")
    print(f"this process (AppTest: the pages and their caches in-process): RSS {rss:,.0f} MB, peak {hwm:,.0f} MB")


def browser(a: argparse.Namespace, ws: Path, ckpt: str) -> None:
    """Full loads of every page's address in headless Chromium against a real server; its memory."""
    from load_test import CHROMIUM, CHROMIUM_FLAGS, open_page
    from playwright.sync_api import sync_playwright
    from streamlit_server import serve

    from did_ui.page_list import HEADINGS

    pages = a.pages.split(",") if a.pages else PAGES
    times: dict[str, list[float]] = {p: [] for p in pages}
    # The server's cache warm-up (on by default) is off unless --browser-warm-up: it would fill the
    # caches of later pages while the first loads, so their 'first' would not time a cold page.
    env = {} if a.browser_warm_up else {"DID_WARM_UP": "0"}
    with serve(ws, env=env, timeout=120) as base, sync_playwright() as p:
        pid = serve.pid  # type: ignore[attr-defined]
        idle = rss_mb(pid)[0]
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = b.new_page(viewport={"width": 1400, "height": 1000})

        def url(name: str, k: int) -> str:
            query = f"?run=synthetic&ckpt={ckpt}&example={(7919 * k + 5) % a.pairs}" if name == "example" else ""
            return f"{base}/{'' if name == 'runs' else name}{query}"

        first = open_page(page, HEADINGS["score"], url("score", 0))  # the browser compiles the app's JavaScript
        for k in range(1 + a.browser_repeats):
            for name in pages:
                times[name].append(open_page(page, HEADINGS[name], url(name, k)))
        rss, hwm = rss_mb(pid)
        b.close()
    print(f"\nfull page load in Chromium (goto until drawn: load_test.DRAWN; server warm-up "
          f"{'on' if a.browser_warm_up else 'off'}; load {os.getloadavg()[0]:.2f}); "
          f"first load of the app {first:.2f} s")
    print(f"{'page':10s} {'first s':>8s} {'again s':>8s}  target < 2 s (example: a new pair each load)")
    for name in pages:
        print(f"{name:10s} {times[name][0]:8.3f} {statistics.median(times[name][1:]):8.3f}")
    print(f"server resident memory: {idle:,.0f} MB idle, {rss:,.0f} MB after the loads, peak {hwm:,.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5, help="0: no timings (with --profile: only the profiles)")
    ap.add_argument("--workspace", default=None, help="reuse or build here (default: a temporary folder)")
    ap.add_argument("--tokens-mean", type=int, default=None,
                    help="realistic response lengths: lognormal around this mean (default: 12-token uniform)")
    ap.add_argument("--max-tokens", type=int, default=None, help="cap on a response's length (default 8 x the mean)")
    ap.add_argument("--token-models", type=int, default=None,
                    help="only the reference and the last N checkpoints store token rows (default: every model)")
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--pages", default=None, help="comma-separated subset of " + ",".join(PAGES))
    ap.add_argument("--profile", default=None, help="comma-separated pages (or example-new) to cProfile cold")
    ap.add_argument("--browser", action="store_true", help="also full page loads in Chromium, and the server's RSS")
    ap.add_argument("--browser-repeats", type=int, default=2)
    ap.add_argument("--browser-warm-up", action="store_true",
                    help="leave the server's cache warm-up on, as `streamlit run app.py` has it (default: off)")
    ap.add_argument("--no-apptest", action="store_true", help="skip the AppTest timings")
    ap.add_argument("--no-storage", action="store_true", help="skip the storage report")
    a = ap.parse_args()

    ws = build(a)
    os.environ["DID_WORKSPACE"] = str(ws)
    os.environ["DID_AUTO_DEMO"] = "0"
    os.environ["DID_WARM_UP"] = "0"  # this script times cold and warm caches itself
    ckpt = f"checkpoint-{100 * min(5, a.checkpoints)}"
    if not a.no_storage:
        print("\n".join(storage_report(ws)))
    if not a.no_apptest:
        apptest(a, ckpt)
    if a.browser:
        browser(a, ws, ckpt)


if __name__ == "__main__":
    main()
