"""The explorer in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Starts ``python -m app`` as a user would (tiny random AdapLeR model, synthetic HateXplain-shaped
data), opens the page, runs an example sentence, checks that the survival heatmap and the
highlighted rationales render (with the PNG export button), loads a dataset example with a human
rationale, checks that a ``<script>`` text shows as text, and saves screenshots to
``tests/artifacts/``. Skipped when /usr/bin/chromium is missing, unless ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_app_api import free_port, make_eraser_data, make_tiny_model

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("/usr/bin/chromium missing in CI (apt-get install -y chromium)")
        pytest.skip("/usr/bin/chromium missing (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, chromium):
    base = tmp_path_factory.mktemp("browser")
    model = make_tiny_model(base / "model")
    data = make_eraser_data(base / "data")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    log = open(base / "server.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "app", "--model", str(model), "--data-dir", str(data),
                             "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"python -m app exited with {proc.returncode}:\n{(base / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("python -m app did not answer within 90 s:\n" + (base / "server.log").read_text())
            time.sleep(0.3)
        yield {"url": url, "launch_s": time.perf_counter() - t0, "log": base / "server.log"}
    finally:
        proc.terminate()  # the python process itself (no wrapper shell)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def page(app_server):
    # optional: the browser tests skip without Playwright
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        dialogs: list[str] = []
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        # the page is usable once the text box exists (waiting for "networkidle" never ends: Gradio keeps a stream open)
        pg.goto(app_server["url"], wait_until="domcontentloaded", timeout=60_000)
        pg.wait_for_selector("#input-text textarea", timeout=60_000)
        pg.js_errors, pg.dialogs = errors, dialogs
        yield pg
        browser.close()


def _wait_for_analysis(pg, expect_text: str, timeout_ms: int = 60_000):
    """Wait until the rationale panels show ``expect_text`` (i.e. this analysis has rendered)."""
    pg.wait_for_function(
        """(t) => { const el = document.querySelector('#rationale-panels');
                    return el && el.textContent.includes(t); }""",
        arg=expect_text, timeout=timeout_ms)
    pg.wait_for_selector("#heatmap .js-plotly-plot", timeout=timeout_ms)


def test_example_renders_heatmap_and_rationales(page, app_server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    page.locator("#examples").get_by_text("A warm, funny", exact=False).first.click()
    _wait_for_analysis(page, "welcome")
    first_answer_s = time.perf_counter() - t0
    # heatmap: a plotly heatmap trace, the [CLS] marker and the x of dropped tokens (eta 1.0 drops tokens)
    heat = page.locator("#heatmap .js-plotly-plot")
    assert heat.locator("g.heatmaplayer image, g.heatmaplayer").count() >= 1
    types = page.evaluate("() => document.querySelector('#heatmap .js-plotly-plot').data.map(t => t.type)")
    assert types[0] == "heatmap"
    names = page.evaluate("() => document.querySelector('#heatmap .js-plotly-plot').data.map(t => t.name)")
    assert "[CLS] (never removed)" in names and "dropped at this layer" in names
    ticks = page.locator("#heatmap .xtick text").all_text_contents()
    assert "[CLS]" in ticks and "[SEP]" in ticks
    # PNG export: plotly's modebar camera button is there
    heat.hover()
    assert page.locator("#heatmap .modebar-btn[data-title*='PNG' i]").count() == 1
    assert page.locator("#lengths-plot .js-plotly-plot").count() == 1
    # rationales: four panels, highlighted and selected words
    panels = page.locator("#rationale-panels .rx-panel")
    assert panels.count() == 4
    assert page.locator("#rationale-panels .rx-sel").count() >= 4
    bg = page.locator("#rationale-panels .rx-sel").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert bg.startswith("rgba(") or bg.startswith("rgb(")
    # prediction and speed table
    prediction = page.locator("#prediction").inner_text()
    assert "positive" in prediction or "negative" in prediction
    assert "AdapLeR, tokens dropped" in page.locator("#speed").inner_text()
    page.screenshot(path=str(ARTIFACTS / "app_explorer.png"), full_page=True)
    assert not page.js_errors, page.js_errors
    print(f"launch {app_server['launch_s']:.1f} s; first answer in the browser {first_answer_s:.1f} s")


def test_dataset_example_shows_human_rationale(page):
    page.locator("#dataset-example input").click()
    page.get_by_role("option").filter(has_text="disgusting").first.click()
    page.locator("#load-example-btn").click()
    page.wait_for_selector("#rationale-panels .rx-panel[data-method='human']", timeout=60_000)
    human = page.locator("#rationale-panels .rx-panel[data-method='human'] .rx-sel").all_text_contents()
    assert human == ["disgusting", "idiot"]
    page.wait_for_function("() => document.querySelector('#metrics').innerText.includes('AdapLeR')", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "app_dataset_example.png"), full_page=True)


def test_script_text_is_shown_as_text(page):
    box = page.locator("#input-text textarea")
    box.fill('<script>alert("xss")</script> <img src=x onerror=alert(2)> hello')
    page.locator("#analyze-btn").click()
    _wait_for_analysis(page, "hello")
    text = page.locator("#rationale-panels").inner_text()
    assert '<script>alert("xss")</script>' in text
    assert page.locator("#rationale-panels script, #rationale-panels img").count() == 0
    assert not page.dialogs, page.dialogs


def test_empty_input_message(page):
    page.locator("#input-text textarea").fill("   ")
    page.locator("#analyze-btn").click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Type a sentence')",
                           timeout=30_000)


def test_report_tab_without_reports(page):
    page.get_by_role("tab", name="ERASER report").click()
    page.wait_for_selector("#live-run", timeout=10_000)
    assert page.locator("#live-dataset").count() == 1
