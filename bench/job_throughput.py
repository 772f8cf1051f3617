"""A job started from the Score page against the CLI on the same job: pairs scored per second, with one
Chromium watching the Score page, on an idle machine and with one busy core beside it.

    python bench/job_throughput.py                 # builds the demo once (~20-60 s), 3 repeats each
    python bench/job_throughput.py --repeats 5 --demo /tmp/demo_ws

For each condition (idle, busy: a `while True: pass` process in a session of its own, as other work
on the machine would be), each repeat scores the demo's high run
(512 pairs, reference + 5 checkpoints, numerics auto) into a fresh workspace: once with
`python -m did_core score` in a session of its own, as typed in a terminal (timed from the start of the
process to its exit), once by filling and
submitting the Score page's form in Chromium and watching its progress panel until the job is done
(timed from job.json's creation to its rc file). Prints the medians and the page/CLI ratio of pairs
per second (the target: ≥ 0.90 in both conditions), twice: end to end (process start to exit, model
loading included) and while scoring (the `score` stage of the command's own JSON-lines progress, the
same records for both ways), and how long the dashboard held the page's job for page draws.
Page jobs run in the dashboard's warm process (`--standby on`, the default: did_ui/standby.py; the
benchmark waits for it to be ready before filling the form, as a person typing would) or in a new
process as before (`--standby off`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from streamlit_server import serve  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]


def ensure_demo(path: Path) -> Path:
    if not (path / "demo" / "runs" / "high").is_dir():
        subprocess.run([sys.executable, "-m", "did_core", "demo", "--workspace", str(path)], check=True,
                       capture_output=True)
    return path


def job_inputs(demo: Path) -> dict[str, str]:
    d = demo / "demo"
    return {"data": str(d / "data" / "high.jsonl"), "ref": str(d / "models" / "reference"), "run": str(d / "runs" / "high")}


def scoring_rate(progress: Path, n_pairs: int) -> float:
    """Pairs (each under every model) per second over the `score` stage of a --progress-json file, first
    to last record (the records count pair passes, one pair under one model: pairs × models in all)."""
    recs = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    score = [r for r in recs if r.get("stage") == "score"]
    first, last = score[0], score[-1]
    return (last["done"] - first["done"]) / (last["time"] - first["time"]) * n_pairs / last["total"]


def cli_run(inputs: dict, ws: Path) -> tuple[float, int, float]:
    ws.mkdir(parents=True, exist_ok=True)
    progress = ws / "progress.jsonl"
    t0 = time.perf_counter()
    # its own session, as a command typed in a terminal is (Linux's autogroup shares the CPU between
    # sessions first: a CLI in the benchmark's session would share the busy loop's group instead)
    subprocess.run([sys.executable, "-m", "did_core", "score", "--data", inputs["data"], "--ref", inputs["ref"],
                    "--run", inputs["run"], "--workspace", str(ws), "--name", "t", "--progress-json", str(progress)],
                   check=True, capture_output=True, start_new_session=True)
    wall = time.perf_counter() - t0
    n = json.loads((ws / "runs" / "t" / "run.json").read_text())["dataset"]["n_pairs"]
    return wall, n, scoring_rate(progress, n)


def page_run(inputs: dict, ws: Path, browser, warm: bool) -> tuple[float, int, float]:
    from did_ui import jobs

    ws.mkdir(parents=True, exist_ok=True)
    with serve(ws, env={"DID_WARM_UP": "0", "DID_STANDBY": "1" if warm else "0"}) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/score")
        # A person takes longer to fill the form than the warm process takes to start (~5 s): wait
        # for it, as they would without knowing (at most 60 s).
        deadline = time.time() + 60
        while warm and time.time() < deadline and not list((ws / "jobs" / ".standby").glob("*/ready")):
            time.sleep(0.2)
        page.get_by_role("textbox", name="…or a path on this machine").fill(inputs["data"])
        page.get_by_role("textbox", name="Reference model (SFT)").fill(inputs["ref"])
        page.get_by_role("textbox", name="TRL output folder (checkpoint-* inside)").fill(inputs["run"])
        page.get_by_role("textbox", name="Run name").fill("t")
        page.get_by_role("button", name="Start scoring").click()
        deadline = time.time() + 900
        job = None
        while time.time() < deadline:
            listed = jobs.list_jobs(ws)
            job = jobs.info(ws, listed[0].id) if listed else None
            if job is not None and job.status != "running":
                break
            time.sleep(0.5)
        page.close()
    if job is None or job.status != "done":
        raise RuntimeError(f"the page's job did not finish: {job}")
    d = jobs.jobs_dir(ws) / job.id
    wall = (d / "rc").stat().st_mtime - json.loads((d / "job.json").read_text())["created"]
    started = "the warm process" if json.loads((d / "job.json").read_text()).get("standby") else "a new process"
    print(f"  (the page's job ran in {started}; it was held {job.paused_s:.1f} s for page draws)", flush=True)
    n = json.loads((ws / "runs" / "t" / "run.json").read_text())["dataset"]["n_pairs"]
    return wall, n, scoring_rate(d / "progress.jsonl", n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path(tempfile.gettempdir()) / "did_demo_throughput")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--standby", choices=["on", "off"], default="on",
                    help="page jobs in the dashboard's warm process (did_ui/standby.py), or in a new process")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    inputs = job_inputs(ensure_demo(a.demo))
    results: dict[str, dict[str, list[float]]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for condition in ("idle", "busy"):
            # other work on the machine: a program in a session of its own
            busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                    if condition == "busy" else None)
            try:
                for r in range(a.repeats):
                    for way in ("cli", "page"):
                        with tempfile.TemporaryDirectory() as tmp:
                            wall, n, rate = (cli_run(inputs, Path(tmp)) if way == "cli"
                                             else page_run(inputs, Path(tmp), browser, a.standby == "on"))
                        results.setdefault(condition, {}).setdefault(way, []).append(n / wall)
                        results.setdefault(condition, {}).setdefault(way + " scoring", []).append(rate)
                        print(f"{condition} {way} #{r}: {n} pairs in {wall:.1f} s = {n / wall:.1f} pairs/s end to end, "
                              f"{rate:.1f} pairs/s while scoring", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
        browser.close()
    print(f"\nmedian pairs/s (page job / CLI), page jobs in {'the warm' if a.standby == 'on' else 'a new'} process:")
    ok = True
    for condition, ways in results.items():
        for what, suffix in (("end to end", ""), ("while scoring", " scoring")):
            cli, page = statistics.median(ways["cli" + suffix]), statistics.median(ways["page" + suffix])
            ok &= page / cli >= 0.9
            print(f"  {condition:5s} {what:14s} CLI {cli:6.1f}  page {page:6.1f}  ratio {page / cli:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
