"""Real browser: Chromium (Debian's, via Playwright) against `streamlit run app.py` on a synthetic
workspace. Opens every page, fails on any Streamlit exception element, follows a deep link to an
example, walks Back and Forward through the history, checks that bad deep links warn, and saves
screenshots to tests/artifacts/. Skips when Chromium or Playwright is missing."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from did_ui import page_list

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("DID_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]
PAGES = page_list.HEADINGS  # url path -> the heading its page draws
MENU = ".st-key-did_menu"  # picker.page_menu: the app's own menu of page links (st.navigation's is hidden)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        pytest.skip(f"chromium not found at {CHROMIUM}")
    pytest.importorskip("playwright.sync_api")
    from streamlit_server import serve

    from did_core.synthetic_ws import make_synthetic_workspace

    ws = tmp_path_factory.mktemp("browser-ws")
    make_synthetic_workspace(ws, n_pairs=300, n_checkpoints=4, seed=1, tokens=True)
    # a second run on the same dataset and reference (a sweep): for the cross-run views
    make_synthetic_workspace(ws, n_pairs=300, n_checkpoints=4, seed=1, tokens=True, run_name="synthetic-b",
                             beta=0.2, drift=2.0)  # tokens too: it rewrites the reference score the two share
    _plant_audit(ws, "synthetic-b")  # synthetic's run.json has none, as a run scored before the audit
    with serve(ws, env={"DID_INLINE_PAIRS": "200"}) as url:  # its 300 pairs' scatters start closed
        yield url


def _plant_audit(root: Path, run: str) -> None:
    """A tokenization audit in `run`'s run.json, as `score` records it: two pairs cut by max length."""
    from did_core.token_audit import PROBLEMS, Audit, Problem
    from did_core.workspace import Workspace

    ws = Workspace(root)
    manifest = ws.run(run)
    ids = tuple(ws.dataset(run)["pair_id"].astype(str).tolist()[3:5])
    audit = Audit(300, {k: Problem(0) for k in PROBLEMS} | {"truncated": Problem(2, ids, 9, 2)})
    ws.write_run(manifest.replace(extra=dict(manifest.extra) | {"audit": audit.to_dict()}))


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def _settle(pg, title: str) -> None:
    """Wait for the page's title, then for the script run to finish."""
    pg.get_by_role("heading", name=title, exact=True).first.wait_for()
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                         " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')")
    if title == "Synthetic lab":  # the exact lab computes after its sliders are drawn
        pg.locator('[data-testid="stPlotlyChart"]').first.wait_for()
    # Plotly's bundle loads lazily and draws after the script ends: wait until every chart has drawn.
    pg.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
                         ".every(c => c.querySelector('.main-svg'))", timeout=20_000)
    pg.wait_for_timeout(300)


def _no_exception(pg, where: str) -> None:
    errors = pg.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()[:2000]}"


def test_deep_link_to_an_example(server, page):
    """Runs first on a fresh server: a deep link as the very first request still gets app.py's router."""
    page.goto(f"{server}/example?run=synthetic&example=17&ckpt=checkpoint-200")
    _settle(page, "Example")
    page.locator(MENU).get_by_role("link", name="Synthetic lab").wait_for()  # page links draw a moment later
    nav = page.locator(MENU).inner_text()
    assert "Training curves" in nav and "Synthetic lab" in nav, nav
    _no_exception(page, "deep link")
    page.get_by_text("pair 17", exact=False).first.wait_for()
    token = page.locator("span[title*='log_ratio']").first
    token.wait_for()
    assert "logp" in token.get_attribute("title")
    assert "example=17" in page.url and "ckpt=checkpoint-200" in page.url
    page.screenshot(path=str(ARTIFACTS / "example-deep-link.png"), full_page=True)


def test_every_page_opens_without_an_exception(server, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for path, title in PAGES.items():
        page.goto(f"{server}/{'' if path == 'runs' else path}")  # the default page lives at / only
        _settle(page, title)
        _no_exception(page, path)
        assert page.get_by_text("Page not found").count() == 0, path
        section = {"margins": "CHES", "curves": "Squeezing: how peaked the model's next-token distribution is"}.get(path)
        if section:  # the CHES and squeezing sections (did_ui/ches_view.py) draw, charts included
            page.get_by_role("heading", name=section, exact=True).first.wait_for()
            key = {"margins": "ches_quintiles", "curves": "squeezing"}[path]
            page.locator(f".st-key-{key} .main-svg").first.wait_for()
        page.screenshot(path=str(ARTIFACTS / f"{path}.png"), full_page=False)


def test_the_old_runs_address_opens_runs(server, page):
    """/runs (Runs' address before it became the default page at /, and where the menu links) opens
    Runs on a server already serving others, with no "Page not found" dialog and one Runs in the menu."""
    page.goto(f"{server}/")  # a server already past its first request (that one takes another path)
    _settle(page, "Runs")
    page.goto(f"{server}/runs")
    _settle(page, "Runs")
    page.locator('[data-testid="stDataFrame"]').first.wait_for()  # the real page: its runs table
    page.locator(MENU).get_by_role("link", name="Synthetic lab").wait_for()
    assert page.get_by_text("Page not found").count() == 0
    nav = [a.inner_text().strip().splitlines()[-1] for a in page.locator(f"{MENU} a").all()]
    assert nav.count("Runs") == 1, nav
    _no_exception(page, "/runs")


def _query(pg) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlparse

    return dict(parse_qsl(urlparse(pg.url).query))


def _shows(pg, title: str, **params: str) -> None:
    """Wait until the page `title` shows exactly `params` in its address, with the sidebar's
    checkpoint picker on `params["ckpt"]` (a Back or Forward may rerun the page it is already on)."""
    pg.wait_for_function("(want) => new URLSearchParams(location.search).toString() === want",
                         arg="&".join(f"{k}={v}" for k, v in params.items()))
    _settle(pg, title)
    if "ckpt" in params:
        from playwright.sync_api import expect

        expect(pg.get_by_role("combobox", name="Checkpoint", exact=True)).to_have_value(params["ckpt"])
    if "example" in params:
        pg.get_by_text(f"pair {params['example']} ", exact=False).first.wait_for()
    _no_exception(pg, f"{title} {params}")


def test_back_and_forward_restore_each_page_and_its_selection(server, page):
    """One history entry per page change or selection change, and none while going Back or Forward:
    from a deep link to a pair, three clicks in the menu and one checkpoint change, then each Back
    returns the previous page with its run, checkpoint and pair in one press, and Forward replays
    them. `example` (the Example page's own parameter) never reaches another page's address.
    Before: each click added 3-4 entries, and the pair's id leaked into the other pages' entries."""
    pg = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(30_000)
    try:
        run = {"run": "synthetic"}
        steps = [("Example", {**run, "ckpt": "checkpoint-200", "example": "17"})]
        pg.goto(f"{server}/example?run=synthetic&ckpt=checkpoint-200&example=17")
        _shows(pg, steps[0][0], **steps[0][1])
        start = pg.evaluate("history.length")
        menu = pg.locator(MENU)
        for link, title in (("Training curves", "Training curves"), ("Log-margins", "Log-margins")):
            menu.get_by_role("link", name=link).click()
            steps.append((title, {**run, "ckpt": "checkpoint-200"}))
            _shows(pg, steps[-1][0], **steps[-1][1])
        pg.get_by_role("combobox", name="Checkpoint", exact=True).click()
        pg.get_by_role("option", name="checkpoint-100", exact=True).click()
        steps.append(("Log-margins", {**run, "ckpt": "checkpoint-100"}))
        _shows(pg, steps[-1][0], **steps[-1][1])
        menu.get_by_role("link", name="DID entropy").click()
        steps.append(("DID entropy", {**run, "ckpt": "checkpoint-100"}))
        _shows(pg, steps[-1][0], **steps[-1][1])
        assert pg.evaluate("history.length") == start + len(steps) - 1  # one entry per click or pick
        for title, params in reversed(steps[:-1]):
            pg.go_back()
            _shows(pg, title, **params)
        for title, params in steps[1:]:
            pg.go_forward()
            _shows(pg, title, **params)
        assert pg.evaluate("history.length") == start + len(steps) - 1  # Back and Forward added none
    finally:
        pg.close()


def test_a_page_that_ends_early_keeps_the_menu(server, page):
    """Compare with A = B ends its page after the notice (widgets.end_page): the menu is still drawn
    (st.stop() used to take it away, and with it every way to another page)."""
    page.goto(f"{server}/compare?run=synthetic&ckpt=checkpoint-400&a=checkpoint-400")
    _settle(page, "Compare checkpoints")
    page.get_by_text("A and B are the same checkpoint").first.wait_for()
    page.locator(MENU).get_by_role("link", name="Runs").wait_for()
    page.locator(MENU).get_by_role("link", name="Log-margins").click()
    _settle(page, "Log-margins")
    _no_exception(page, "menu after an early end")


def test_bad_deep_links_warn_and_runs_keeps_its_query(server, page):
    """A deep-link value the workspace cannot honour is named in a warning with what is shown
    instead (before: a silent fallback); /runs keeps the run and checkpoint it was given (before:
    it switched to / and lost them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cases = [("/?run=nope", "Runs", "No run 'nope' in this workspace; showing synthetic."),
             ("/example?run=synthetic&example=low-00-17", "Example",
              "Run 'synthetic' has no pair 'low-00-17'; showing its first pair, 0."),
             ("/margins?run=synthetic&ckpt=checkpoint-7", "Log-margins",
              "Run 'synthetic' has no checkpoint 'checkpoint-7'; showing checkpoint-400.")]
    for link, title, message in cases:
        page.goto(f"{server}{link}")
        _settle(page, title)
        alert = page.locator('[data-testid="stAlert"]').filter(has_text=message)
        alert.wait_for()
        assert alert.is_visible(), link
        if link == cases[0][0]:
            page.screenshot(path=str(ARTIFACTS / "bad-run-deep-link.png"), full_page=False)
    assert _query(page) == {"run": "synthetic", "ckpt": "checkpoint-400"}  # the address says what is shown
    page.goto(f"{server}/runs?run=synthetic&ckpt=checkpoint-200")
    _shows(page, "Runs", run="synthetic", ckpt="checkpoint-200")
    # no deep-link warning (the Runs page's other notes, such as a run with no tokenization audit, may show)
    assert page.locator('[data-testid="stAlert"]').filter(has_text="showing").count() == 0
    assert page.get_by_text("Page not found").count() == 0


def test_the_entropy_pair_scatter_opens_stays_open_and_a_click_opens_the_pair(server, page):
    """DID entropy (a run above DID_INLINE_PAIRS) draws its per-pair scatter only once its expander is
    opened; it is still open after a visit to another page; a click on a point opens that pair on the
    Example page."""
    page.goto(f"{server}/entropy")
    _settle(page, "DID entropy")
    points = page.locator('[data-testid="stPlotlyChart"] .scatterlayer .point')
    assert points.count() == 0
    page.locator('[data-testid="stExpander"] summary').filter(has_text="Each pair (300)").click()
    points.first.wait_for()
    _settle(page, "DID entropy")
    assert points.count() == 300
    page.locator(MENU).get_by_role("link", name="Runs").click()
    _settle(page, "Runs")
    page.locator(MENU).get_by_role("link", name="DID entropy").click()
    _settle(page, "DID entropy")
    points.first.wait_for()
    points.nth(7).scroll_into_view_if_needed()
    box = points.nth(7).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 20, y - 20)
    page.mouse.move(x, y, steps=5)  # Plotly picks the point under the hover, then the click selects it
    page.wait_for_timeout(200)
    before = page.evaluate("history.length")
    page.mouse.click(x, y)
    _settle(page, "Example")
    assert "example=" in page.url
    _no_exception(page, "entropy scatter → example")
    page.wait_for_timeout(500)
    assert page.evaluate("history.length") == before + 1  # one entry: picker.open_example clicks a page link
    page.go_back()
    _settle(page, "DID entropy")
    assert "/entropy" in page.url and "example=" not in page.url


def test_the_tokenization_audit_links_to_its_pairs(server, page):
    """Runs shows the run's tokenization audit, and a pair link under a problem opens that pair; a run
    scored before the audit says it has none."""
    page.goto(f"{server}/?run=synthetic-b")
    _settle(page, "Runs")
    page.get_by_role("heading", name="Tokenization audit").wait_for()
    link = page.get_by_role("link", name="pair 3")
    link.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "runs-audit.png"), full_page=True)
    link.click()
    _settle(page, "Example")
    page.get_by_text("pair 3", exact=False).first.wait_for()
    assert "example=3" in page.url and "run=synthetic-b" in page.url, page.url
    _no_exception(page, "audit link")
    page.goto(f"{server}/?run=synthetic")
    _settle(page, "Runs")
    page.get_by_text("No tokenization audit recorded for this run").wait_for()


BOX_SELECT_ALL_JS = """chart => {
  // A box over the whole plot area, made through Plotly's own API instead of a pixel drag: the box is
  // drawn with Plotly.relayout (layout.selections, as the mode bar's Box Select leaves it), and the
  // points inside it reach Streamlit as the `plotly_selected` event Plotly emits at the end of a drag,
  // with the fields Plotly gives each point (curveNumber, pointIndex, pointNumber, x, y, customdata).
  const gd = chart.querySelector('.js-plotly-plot');
  const [x0, x1] = gd._fullLayout.xaxis.range, [y0, y1] = gd._fullLayout.yaxis.range;
  const box = {type: 'rect', xref: 'x', yref: 'y', x0, x1, y0, y1};
  return window.Plotly.relayout(gd, {dragmode: 'select', selections: [box]}).then(() => {
    const points = [];
    gd._fullData.forEach((trace, curveNumber) => {  // the pairs' traces: those that carry customdata
      for (let i = 0; trace.customdata && i < trace.x.length; i++) {
        const x = trace.x[i], y = trace.y[i];
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1)
          points.push({curveNumber, pointIndex: i, pointNumber: i, x, y, customdata: trace.customdata[i]});
      }
    });
    gd.emit('plotly_selected', {points, range: {x: [x0, x1], y: [y0, y1]}, selections: [box]});
    return points.length;
  });
}"""


def test_a_box_selection_on_the_margins_scatter_lists_the_pairs(server, page):
    """The scatter's default drag pans and a click selects one point; a box selection picks several
    pairs, which the page lists for the inspector. The box is made through Plotly's API
    (BOX_SELECT_ALL_JS), not by dragging pixels after fixed sleeps."""
    page.goto(f"{server}/margins")
    _settle(page, "Log-margins")
    page.locator('[data-testid="stExpander"] summary').filter(has_text="Each pair (300): M_π").click()
    chart = page.locator('[data-testid="stExpander"] details[open] [data-testid="stPlotlyChart"]').first
    chart.wait_for()
    _settle(page, "Log-margins")
    picked = chart.evaluate(BOX_SELECT_ALL_JS)
    assert picked == 300, picked
    try:
        page.get_by_text("300 pair(s) selected.").wait_for()
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "margins-box-selection-failed.png"), full_page=True)
        raise
    _no_exception(page, "margins box selection")


def test_a_click_on_a_compare_table_row_opens_that_pair(server, page):
    """Compare's top-movers table: a click on a row's selection cell opens that pair on Example."""
    page.goto(f"{server}/compare")
    _settle(page, "Compare checkpoints")
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = grid.bounding_box()
    before = page.evaluate("history.length")
    page.mouse.click(box["x"] + 12, box["y"] + 35 + 17)  # the first row's selection cell, under the header
    _settle(page, "Example")
    page.get_by_text("Run synthetic · pair ").first.wait_for()
    _no_exception(page, "compare table row → example")
    page.wait_for_timeout(500)
    assert page.evaluate("history.length") == before + 1
    page.go_back()
    _settle(page, "Compare checkpoints")


def test_the_runs_page_downloads_equal_the_cli_export(server, page, tmp_path):
    """Runs' "Pairs CSV" button (its data built when pressed) hands the browser the bytes that
    did_core.export writes for the run (tests/test_cli.py checks its numbers against a naive loop)."""
    from urllib.parse import parse_qs, urlparse

    from did_core.export import pairs_table, write_table

    page.goto(f"{server}/?run=synthetic")
    _settle(page, "Runs")
    with page.expect_download() as got:
        page.get_by_role("button", name="Pairs CSV").click()
    download = got.value
    run = parse_qs(urlparse(page.url).query)["run"][0]
    assert download.suggested_filename == f"{run}-pairs.csv"
    root = Path(page.evaluate("() => document.body.innerText").split("Workspace ")[1].split(" ·")[0])
    expected = write_table(pairs_table(root, run), tmp_path / "cli.csv").read_bytes()
    assert Path(download.path()).read_bytes() == expected


def test_runs_lined_up_open_overlaid_curves_and_a_cross_run_compare(server, page):
    """Two runs selected in Runs' sweep table (`?runs=`): its links open the overlaid curves (one legend
    entry per run) and Compare from one run's checkpoint to the other's; each address, pasted into a
    new page, shows the same view."""
    def legend(pg) -> set[str]:
        texts = pg.locator('[data-testid="stPlotlyChart"] .legendtext')
        texts.filter(has_text="synthetic-b").first.wait_for()  # Plotly draws after the script has run
        return {t.strip() for t in texts.all_text_contents()}

    page.goto(f"{server}/?run=synthetic")  # select the two runs in the sweep table: each click writes `runs=`
    _settle(page, "Runs")
    for row, want in ((0, "synthetic"), (1, "synthetic,synthetic-b")):
        grid = page.locator('[data-testid="stDataFrame"]').first
        grid.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 35 + 17 + 35 * row)  # the row's selection cell
        page.wait_for_function("(want) => new URLSearchParams(location.search).get('runs') === want", arg=want)
        _settle(page, "Runs")
    fresh = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    fresh.set_default_timeout(30_000)
    try:
        views = [("Training curves, overlaid", "Training curves"),
                 ("Compare synthetic → synthetic-b", "Compare checkpoints")]
        for link, title in views:
            page.goto(f"{server}/?run=synthetic&runs=synthetic,synthetic-b")
            _settle(page, "Runs")
            page.get_by_role("link", name=link).click()
            _settle(page, title)
            _no_exception(page, link)
            for pg in (page, fresh):
                if pg is fresh:
                    fresh.goto(page.url)
                    _settle(fresh, title)
                if title == "Training curves":
                    assert {"synthetic", "synthetic-b"} <= legend(pg), legend(pg)
                else:
                    pg.get_by_role("heading", name="A = synthetic · checkpoint-400 → B = synthetic-b · checkpoint-400").wait_for()
                _no_exception(pg, f"{title}, pasted")
            page.screenshot(path=str(ARTIFACTS / f"lined-up-{title.split()[0].lower()}.png"), full_page=True)
        assert _query(fresh) == {"run": "synthetic-b", "ckpt": "checkpoint-400", "a_run": "synthetic", "a": "checkpoint-400"}
    finally:
        fresh.close()


def test_upload_and_score_in_the_browser(page, tmp_path):
    """Score page in a real browser, as a user has it (the warm job process on): upload a JSONL, give
    a reference and a TRL run folder, start; the job runs in the warm process, finishes, and its run
    opens on Runs."""
    from cli_world import build_world
    from streamlit_server import serve

    world = build_world(tmp_path / "w", n_pairs=12)
    ws = tmp_path / "ws"
    with serve(ws, env={"DID_STANDBY": "1"}) as url:
        pg = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(f"{url}/score")
        _settle(pg, "Score")
        deadline = time.time() + 60  # the page starts the warm process; a person typing gives it this long
        while not list((ws / "jobs" / ".standby").glob("*/ready")) and time.time() < deadline:
            time.sleep(0.2)
        pg.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(world["data"]))
        pg.get_by_text("pairs.jsonl").first.wait_for()
        pg.get_by_label("Reference model (SFT)").fill(str(world["ref"]))
        pg.get_by_label("TRL output folder (checkpoint-* inside)").fill(str(world["run"]))
        pg.get_by_role("button", name="Start scoring").click()
        pg.get_by_text("done · 12/12").first.wait_for(timeout=120_000)  # (not "done · done": job_panel.job_label)
        _no_exception(pg, "score job")
        (job,) = [json.loads(p.read_text()) for p in (ws / "jobs").glob("*/job.json")]
        assert job.get("standby") is True, job  # run by the warm process, not a new one
        pg.locator(MENU).get_by_role("link", name="Runs").click()
        _settle(pg, "Runs")
        assert pg.get_by_text("12 pairs").count() > 0
        pg.close()


def test_concurrent_deep_links_on_a_fresh_server(page, tmp_path):
    """Several sessions whose first request is a deep link, at once, on a fresh server: every one ends
    up under app.py's router (its navigation, not Streamlit's file-name menu of pages/), whichever
    session flips Streamlit's pages-directory switch first."""
    from streamlit_server import serve

    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(tmp_path / "ws", n_pairs=50, n_checkpoints=2, seed=2)
    browser = page.context.browser  # the module's browser: one Playwright per thread
    links = ["example?run=synthetic&example=3", "margins", "curves", "example?run=synthetic&example=5", "entropy",
             "compare"]
    with serve(tmp_path / "ws") as url:
        contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in links]
        pages = [ctx.new_page() for ctx in contexts]
        for pg, link in zip(pages, links, strict=True):
            pg.goto(f"{url}/{link}", wait_until="commit")
        for pg, link in zip(pages, links, strict=True):
            pg.set_default_timeout(60_000)
            _settle(pg, PAGES[link.split("?")[0]])
            _no_exception(pg, link)
            nav = pg.locator(MENU)
            nav.get_by_text("Synthetic lab", exact=True).wait_for()
            assert "Training curves" in nav.inner_text(), f"{link}: {nav.inner_text()}"
        for ctx in contexts:
            ctx.close()


def test_example_per_token_squeezing_colouring_and_chart(server, page):
    """Example: the per-token squeezing chart draws, and the "top-1 probability" colouring recolours the
    tokens (its legend says so) with the checkpoint's and the reference's values in each hover."""
    page.goto(f"{server}/example?run=synthetic&example=17&ckpt=checkpoint-200")
    _settle(page, "Example")
    _no_exception(page, "example")
    page.get_by_text("Squeezing at each token").first.wait_for()
    page.get_by_text("top-1 probability at each position").first.wait_for()  # the chart's subplot title
    before = page.locator("span[title*='top1_prob']").first.get_attribute("style")
    page.get_by_role("radio", name="top-1 probability").click()  # st.segmented_control: a radio group
    page.get_by_text("peaked (squeezed)").first.wait_for()
    _settle(page, "Example")
    _no_exception(page, "example, top-1 colouring")
    token = page.locator("span[title*='ref_top1_prob']").first
    assert "ref_token_entropy" in token.get_attribute("title")
    assert token.get_attribute("style") != before  # recoloured
    page.screenshot(path=str(ARTIFACTS / "example-squeezing.png"), full_page=True)
