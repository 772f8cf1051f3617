"""Load test (issue 6): three headless Chromium sessions work in the dashboard while a scoring job
runs in the same workspace. Target: every page opens in under 2 s.

    python bench/load_test.py                      # users: 1-3 s between page opens
    python bench/load_test.py --think 0 0          # stress: no pause at all
    python bench/load_test.py --no-job             # control: the same without the scoring job

The workspace holds a synthetic run (`--pairs` pairs x `--checkpoints` checkpoints, through the real
writers) and a scoring job on tests/cli_world.py's tiny world (`--score-pairs` pairs), started through
the dashboard's own job launcher (so at its priority, and the Score page shows it running); it is
restarted on fresh data whenever it ends before the sessions do.

Sessions start `--stagger` s apart. Each loads the app at a deep link to an example (a full page
load), then, round after round, opens every page in a random order: by a click on its sidebar link
(how users move between pages), or, for a `--reload-share` of the opens, by a full load of the
page's address; after an open, with chance `--drill-share`, it opens the page's closed per-pair
drill-down (widgets.pair_drill_down), which then stays open for its later visits. A pause drawn from
`--think LO HI` seconds comes before each open. An open is timed from the click (or `page.goto`)
until the page is drawn: its title shown, Streamlit's script run finished, no lazily loaded element
left as a skeleton, every Plotly chart drawn (DRAWN; a drill-down: DRILLED), and then checked for
exception elements.

The target, every page opened in under 2 s, is checked on every open once all sessions are
working: clicks, full loads and drill-downs, in the first round (the server's caches cold for that
view) and later. Reported beside it: each session's first load of the app (a new browser profile
compiles ~9 MB of JavaScript), and the opens that overlapped another session's first load
(`by_phase`: "start-up"), since on this machine that new browser takes the same two cores; with
medians, 90th percentiles and maxima, what else was opening during each slow open, the CPU seconds
the browsers, the server and the job used, and how many pairs per second the job scored meanwhile
(it pauses while pages are drawn: did_ui/jobs.py; `--sessions 0` gives its rate with no browser,
and DID_JOB_YIELD_S=0 in the environment turns the pausing off). The exit status is 0 when the
target holds and nothing failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from did_ui import page_list  # noqa: E402

CHROMIUM = os.environ.get("DID_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]
PAGES = page_list.HEADINGS  # url path -> the heading its page draws
NAV = {p.heading: p.title for p in page_list.PAGES.values()}  # heading -> sidebar label
DRAWN = """(title) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (![...document.querySelectorAll('h1')].some(h => h.innerText.trim() === title)) return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  for (const c of document.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (!c.querySelector('.main-svg')) return false;
  return true; }"""
"""The page is drawn: the script run has finished, the page's title is shown, no lazily loaded element
(chart, table) is still a skeleton placeholder, and every Plotly chart has its SVG. Checked every
POLL_MS, not on every animation frame, so that the measuring does not itself keep the browsers busy."""
POLL_MS = 50

DRILLED = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  const charts = [...document.querySelectorAll('[data-testid="stExpander"] details[open] [data-testid="stPlotlyChart"]')];
  return charts.length > 0 && charts.every(c => c.querySelector('.main-svg')); }"""
"""A drill-down is drawn: an open expander holds a Plotly chart that has drawn, and the rerun has ended."""
CLOSED_DRILL_DOWN = '[data-testid="stExpander"] details:not([open]) summary'
"""A closed per-pair drill-down (widgets.pair_drill_down: "Each pair (N): ...")."""


def _fail_on_exception(page, where: str) -> None:
    """Raise when the page shows a Streamlit exception element."""
    errors = page.locator('[data-testid="stException"]')
    if errors.count():
        raise AssertionError(f"{where}: {errors.first.inner_text()[:500]}")


def open_page(page, title: str, url: str | None = None) -> float:
    """Seconds from navigation until the page is drawn (see DRAWN), with no exception on it:
    `url` given: a full load of that address (the browser reloads the app); otherwise a click on the
    page's link in the sidebar, as a user moves between pages."""
    t0 = time.perf_counter()
    if url is not None:
        page.goto(url, wait_until="commit")
    else:
        # the app's own menu of page links (picker.page_menu; st.navigation's is hidden)
        page.locator(".st-key-did_menu").get_by_role("link", name=NAV[title], exact=True).first.click()
    page.wait_for_function(DRAWN, arg=title, polling=POLL_MS, timeout=60_000)
    elapsed = time.perf_counter() - t0
    _fail_on_exception(page, str(url))
    return elapsed


def open_drill_down(page) -> float | None:
    """Seconds from a click on the page's closed per-pair drill-down until its scatter is drawn (see
    DRILLED), or None when the page has no closed drill-down."""
    summary = page.locator(CLOSED_DRILL_DOWN).filter(has_text="Each pair (")
    if not summary.count():
        return None
    t0 = time.perf_counter()
    summary.first.click()
    page.wait_for_function(DRILLED, polling=POLL_MS, timeout=60_000)
    elapsed = time.perf_counter() - t0
    _fail_on_exception(page, "drill-down")
    return elapsed


def session(k: int, base: str, a: argparse.Namespace, times: dict, failures: list) -> None:
    """One user: load the app at a deep link, then open every page once a round in a random order."""
    from playwright.sync_api import sync_playwright

    rng = random.Random(a.seed + k)
    time.sleep(k * a.stagger)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def deep_link(name: str) -> str:
            return f"{base}/{'' if name == 'runs' else name}" + (f"?run=synthetic&ckpt=checkpoint-200&example={rng.randrange(100)}"
                                       if name == "example" else "")

        def timed(key: tuple, title: str | None, url: str | None, where: str) -> bool:
            """Open a page (or, `title` None, the page's closed drill-down, if any) and log the time."""
            try:
                started = time.time()
                elapsed = open_page(page, title, url) if title is not None else open_drill_down(page)
                if elapsed is not None:
                    times.setdefault(key, []).append(elapsed)
                    times.setdefault("log", []).append((started, k, key, elapsed))
                return True
            except Exception as e:  # noqa: BLE001 — report, keep loading the server
                shot = Path(tempfile.gettempdir()) / f"did-load-failure-{where.replace(' ', '-')}.png"
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(shot))
                failures.append(f"{where}: {type(e).__name__}: {str(e)[:300]} (screenshot {shot})")
                return False

        if not timed(("first visit" if k == 0 else "app load", "full"), "Example", deep_link("example"),
                     f"session {k} app load"):
            return
        for r in range(a.rounds):
            order = list(PAGES)
            rng.shuffle(order)
            for name in order:
                time.sleep(rng.uniform(*a.think))
                full = rng.random() < a.reload_share
                if (timed((name, "full" if full else "click", r == 0), PAGES[name], deep_link(name) if full else None,
                          f"session {k} round {r} {name}") and rng.random() < a.drill_share):
                    time.sleep(rng.uniform(*a.think) / 2)
                    timed((name, "drill", r == 0), None, None, f"session {k} round {r} {name} drill-down")
        browser.close()


CPU_GROUPS = (("browsers", ("chromium", "chrome")), ("server", ("streamlit",)), ("job", ("did_core",)))
"""Process groups whose CPU time the run reports, by words in their command line (first match wins)."""


def _cpu_by_pid() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process in CPU_GROUPS now, from /proc (Linux)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = next((g for g, words in CPU_GROUPS if any(w in cmd for w in words)), None)
        if group is not None:
            out[int(entry.name)] = (group, (int(stat[11]) + int(stat[12])) / tick)
    return out


def watch_cpu(stop: threading.Event, totals: dict) -> None:
    """Until `stop`: CPU seconds used per group since the start, sampled every 0.5 s (a process that
    ends between two samples loses at most its last 0.5 s)."""
    first, last = _cpu_by_pid(), {}
    while not stop.wait(0.5):
        last.update(_cpu_by_pid())
    last.update(_cpu_by_pid())
    for pid, (group, cpu) in last.items():
        totals[group] = totals.get(group, 0.0) + cpu - (first[pid][1] if pid in first else 0.0)


def fresh_pairs(path: Path, n: int, seed: int) -> Path:
    """New pairs for a restarted job; each prompt ends in '?' so that no prompt can merge whole into its
    response's first token (tests/cli_world.py's tokenizer merges 't'+'h'+'e'; the scorer rejects such
    a pair, rightly)."""
    import json

    from cli_world import write_pairs

    rows = [json.loads(line) for line in write_pairs(path, n, seed=seed).read_text().splitlines()]
    path.write_text("".join(json.dumps(r | {"prompt": r["prompt"] + "?"}) + "\n" for r in rows))
    return path


def keep_scoring(ws: Path, world_root: Path, score_pairs: int, stop: threading.Event, log: dict) -> None:
    """Keep one scoring job running in `ws` (via did_ui.jobs, as the Score page starts it)."""
    from cli_world import build_world

    from did_ui import job_argv, jobs

    world = build_world(world_root, n_pairs=score_pairs)
    n = 0
    while not stop.is_set():
        data = world["data"] if n == 0 else fresh_pairs(world_root / f"pairs{n}.jsonl", score_pairs, seed=n)
        argv = job_argv.score_argv(str(data), str(world["ref"]), workspace=str(ws), run_dir=str(world["run"]))
        job_id = jobs.start(ws, argv, kind="score")
        log.setdefault("jobs", []).append(job_id)
        log.setdefault("starts", []).append(time.time())
        while not stop.is_set():
            info = jobs.info(ws, job_id)
            if info is None or info.status != "running":
                log.setdefault("ended", []).append((job_id, info.status if info else "?", time.time()))
                if info is not None and info.status == "failed":
                    log.setdefault("errors", []).append(f"{job_id}: {info.error}")
                if info is not None and info.status == "done":
                    log["scored"] = log.get("scored", 0) + (info.total or 0)
                log["current"] = 0
                break
            log["last_progress"] = (info.stage, info.done, info.total)
            log["current"] = info.done if info.stage == "score" and info.done else 0
            time.sleep(0.5)
        n += 1
    for job_id in log.get("jobs", []):
        jobs.cancel(ws, job_id)


def _scored(log: dict) -> int:
    """Pairs the scoring jobs have scored so far: finished jobs' totals plus the running one's count."""
    return log.get("scored", 0) + log.get("current", 0)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _max(xs: list[float]) -> float:
    return max(xs) if xs else float("nan")


APP_LOADS = ("first visit", "app load")
"""Each session's first load of the app: a new browser profile compiling the frontend's JavaScript."""


def by_phase(log: list[tuple[float, int, tuple, float]]) -> dict[tuple[str, str], list[float]]:
    """Open times (log rows: start time, session, (page, how, first round?), seconds), grouped by
    (how, phase). Phase "start-up": the open overlapped another session's first load of the app (a
    new browser compiling ~9 MB of JavaScript on these same two cores); else "first round" (the
    server's caches cold for that view) or "later". App loads themselves are left out."""
    boots = [(k, t, t + e) for t, k, key, e in log if key[0] in APP_LOADS]
    out: dict[tuple[str, str], list[float]] = {}
    for t, k, key, e in log:
        if key[0] in APP_LOADS:
            continue
        booting = any(k2 != k and t2 < t + e and end > t for k2, t2, end in boots)
        phase = "start-up" if booting else "first round" if key[2] else "later"
        out.setdefault((key[1], phase), []).append(e)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--score-pairs", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-job", action="store_true", help="control: no scoring job running")
    ap.add_argument("--think", type=float, nargs=2, default=[1.0, 3.0], metavar=("LO", "HI"),
                    help="pause before each page open, drawn uniformly from [LO, HI] seconds")
    ap.add_argument("--reload-share", type=float, default=0.125,
                    help="share of page opens done by a full load of the page's address instead of a click")
    ap.add_argument("--drill-share", type=float, default=0.25,
                    help="chance that a session opens a page's closed per-pair drill-down after opening the page "
                         "(it then stays open for that session's later clicks, until a full load)")
    ap.add_argument("--stagger", type=float, default=3.0, help="seconds between the sessions' starts")
    a = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"chromium not found at {CHROMIUM}", file=sys.stderr)
        return 2
    import transformers
    from streamlit_server import serve

    from did_core.synthetic_ws import make_synthetic_workspace

    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="did-load-", ignore_cleanup_errors=True) as tmp:  # a job may still write
        tmp = Path(tmp)
        ws = tmp / "ws"
        t0 = time.perf_counter()
        make_synthetic_workspace(ws, n_pairs=a.pairs, n_checkpoints=a.checkpoints, seed=0, tokens=True)
        print(f"workspace: synthetic run, {a.pairs} pairs x {a.checkpoints} checkpoints ({time.perf_counter() - t0:.1f} s)")
        stop, job_log = threading.Event(), {}
        scorer = threading.Thread(target=keep_scoring, args=(ws, tmp / "world", a.score_pairs, stop, job_log))
        if not a.no_job:
            scorer.start()
        with serve(ws) as base:
            deadline = time.time() + 120
            while not a.no_job and job_log.get("last_progress", (None,))[0] != "score" and time.time() < deadline:
                time.sleep(0.5)  # start measuring once the job is past its imports
            print(f"scoring job running: {job_log.get('last_progress')}; {a.sessions} sessions x {a.rounds} rounds "
                  f"x {len(PAGES)} pages, {a.reload_share:.0%} by full load, pause {a.think[0]:g}-{a.think[1]:g} s, "
                  f"sessions {a.stagger:g} s apart")
            times: dict = {}
            failures: list[str] = []
            t0 = time.perf_counter()
            scored0 = _scored(job_log)
            cpu: dict[str, float] = {}
            cpu_stop = threading.Event()
            watcher = threading.Thread(target=watch_cpu, args=(cpu_stop, cpu))
            watcher.start()
            threads = [threading.Thread(target=session, args=(k, base, a, times, failures))
                       for k in range(a.sessions)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if not threads:  # --sessions 0: the job's rate on an idle dashboard
                time.sleep(60)
            wall = time.perf_counter() - t0
            cpu_stop.set()
            watcher.join()
            progress = job_log.get("last_progress")
            scored = _scored(job_log) - scored0
        stop.set()
        if not a.no_job:
            scorer.join()
    print(f"sessions ran {wall:.0f} s; scoring job last seen at {progress}; jobs started {len(job_log.get('jobs', []))}, "
          f"ended {len(job_log.get('ended', []))} ({', '.join(e[1] for e in job_log.get('ended', [])) or '-'}), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    opens = len(times.get("log", []))
    print(f"CPU used while the sessions ran ({wall:.0f} s x {os.cpu_count()} cores): "
          + ", ".join(f"{g} {cpu.get(g, 0.0):.0f} s" + (f" ({cpu.get(g, 0.0) / opens:.2f} s per page open)" if opens
                                                          and g != "job" else "") for g, _ in CPU_GROUPS))
    if not a.no_job:
        print(f"the job scored {scored} pairs while the sessions ran: {scored / wall:.1f} pairs/s "
              f"(--sessions 0 gives its rate on an idle dashboard)")
    print(f"{'page':<11} {'open by':<7} {'first round: n':>14} {'median':>7} {'max':>6} | {'later: n':>8} {'median':>7} "
          f"{'p90':>6} {'max (s)':>7}  < 2 s")
    for name, note in (("first visit", "a fresh server (imports, cold caches) and a new browser profile"),
                       ("app load", "a new browser profile: compiles Streamlit's and Plotly's JavaScript")):
        got = sorted(times.get((name, "full"), []))
        if got:
            print(f"{name:<11} {'full':<7} {len(got):>14} {statistics.median(got):>7.2f} {got[-1]:>6.2f} | {note}")
    for name in PAGES:
        for how in ("click", "full", "drill"):
            cold, warm = sorted(times.get((name, how, True), [])), sorted(times.get((name, how, False), []))
            if not (cold or warm):
                continue
            line = f"{name:<11} {how:<7} {len(cold):>14} {_med(cold):>7.2f} {_max(cold):>6.2f} | {len(warm):>8} "
            if warm:
                p90 = warm[min(len(warm) - 1, int(0.9 * len(warm)))]
                line += f"{_med(warm):>7.2f} {p90:>6.2f} {warm[-1]:>7.2f}  {'yes' if warm[-1] < 2 else 'NO'}"
            print(line)
    log = sorted(times.get("log", []))
    t_first = min((e[0] for e in log), default=0.0)
    for started, k, key, elapsed in log:
        if elapsed >= 2 and key[0] not in APP_LOADS:
            since = [started - t for t in job_log.get("starts", []) if t <= started]
            during = [f"session {k2} {key2[0]} {key2[1]} ({t2 - t_first:.1f}-{t2 + e2 - t_first:.1f} s)"
                      for t2, k2, key2, e2 in log if k2 != k and t2 < started + elapsed and t2 + e2 > started]
            print(f"slow: at {started - t_first:5.1f} s session {k} {key[0]} by {key[1]} "
                  f"{'first round' if key[2] else 'later'}: {elapsed:.2f} s"
                  + (f" ({min(since):.1f} s after a job (re)start)" if since else "")
                  + f"; meanwhile: {', '.join(during) or 'no other open'}")
    for f in failures:
        print("FAILED", f)
    for e in job_log.get("errors", []):
        print("JOB FAILED", e)
        failures.append(e)
    rows = (("click", "page opens in a session (sidebar clicks)"),
            ("full", "full page loads (address bar, deep link; browser caches warm)"),
            ("drill", "per-pair drill-downs opened (a click on the closed expander)"))
    groups = by_phase(log)
    for phase, note in (("first round", "the server's caches cold for the view"), ("later", ""),
                        ("start-up", "while another session's new browser loaded the app")):
        for how, label in rows:
            got = sorted(groups.get((how, phase), []))
            if got:
                print(f"{label}, {phase}{f' ({note})' if note else ''}: {len(got)}, median {_med(got):.2f} s, "
                      f"max {got[-1]:.2f} s, {sum(t < 2 for t in got)}/{len(got)} under 2 s")
    every = [t for (_, phase), got in groups.items() if phase != "start-up" for t in got]
    ok = bool(every) and max(every) < 2 and not failures
    print(f"every page open and drill-down once all sessions are working under 2 s: {'yes' if ok else 'NO'} "
          f"({sum(t < 2 for t in every)}/{len(every)}; start-up overlaps and app loads reported above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
