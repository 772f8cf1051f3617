"""README screenshots: start the dashboard on a workspace and save assets/screenshot_<page>.png.

    python scripts/screenshots.py [--workspace DIR] [--out assets]

Default workspace: $DID_WORKSPACE or ./workspace (build the demo first: python -m did_core demo).
Uses Debian's Chromium through Playwright, like tests/test_browser.py.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]
SHOTS = [  # (file stem, url path + query, heading to wait for)
    ("runs", "runs", "Runs"),
    ("curves", "curves", "Training curves"),
    ("margins", "margins", "Log-margins"),  # taller: the histogram and the per-pair scatter below it
    ("entropy", "entropy", "DID entropy"),
    ("compare", "compare", "Compare checkpoints"),
    ("example", "example?run=demo-low&example=low-03-25&ckpt=checkpoint-60", "Example"),
    ("lab", "lab", "Synthetic lab"),
]

TALL = {"margins": 1480}
"""Pages shot in a viewport taller than 1,000 pixels (Streamlit scrolls inside its main block, so a
full-page screenshot would not show more)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=os.environ.get("DID_WORKSPACE") or "workspace")
    ap.add_argument("--out", default=str(ROOT / "assets"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--run", default=None, help="run to show (default: the first)")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DID_WORKSPACE": str(Path(a.workspace).resolve()), "DID_AUTO_DEMO": "0"}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        Path(a.out).mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(60_000)
            for stem, path, heading in SHOTS:
                page.set_viewport_size({"width": 1440, "height": TALL.get(stem, 1000)})  # Streamlit scrolls inside
                sep = "&" if "?" in path else "?"
                page.goto(f"{url}/{path}" + (f"{sep}run={a.run}" if a.run and "run=" not in path else ""))
                page.get_by_role("heading", name=heading, exact=True).first.wait_for()
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                                       " || !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                                       ".innerText.includes('Running')")
                if stem in ("lab", "curves"):  # charts arrive after the first widgets are drawn
                    page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
                page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
                                       ".every(c => c.querySelector('.main-svg'))")
                # the menu's page links and the tables draw after the script has finished
                page.locator(".st-key-did_menu a").first.wait_for()
                page.wait_for_timeout(3000)
                if page.locator('[data-testid="stWarning"], [data-testid="stAlertContentWarning"]').count():
                    print(f"note: {stem} shows a warning")
                if page.locator('[data-testid="stException"]').count():
                    raise SystemExit(f"{stem}: the page shows an exception")
                target = Path(a.out) / f"screenshot_{stem}.png"
                page.screenshot(path=str(target))
                print(f"wrote {target}")
            browser.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
