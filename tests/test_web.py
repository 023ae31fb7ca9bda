"""The web page at ``/`` and the offline API docs, tried in a real headless Chromium.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package (test
extra; it drives the system Chromium, nothing is downloaded). Skipped with the reason when
either is missing.
"""

import os
import shutil
from pathlib import Path

import pytest

from ferroute.serve.app import start_local_server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# no background networking: this machine has no internet, and the page must not need it
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (as .ci/run does) to test the web page")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra) to test the web page")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    proc, url = start_local_server(tiny_model_dir, env=dict(os.environ, FERROUTE_API_TOKEN=""))
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_page_routes_dropped_photos_and_draws_them(browser, server, tmp_path):
    page = browser.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(server + "/")
    assert "ferroute" in page.title()
    page.set_input_files("#files", [str(EXAMPLES / "astronaut_photo.jpg"), str(EXAMPLES / "no_face_coffee.jpg")])
    page.wait_for_selector(".result canvas", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('.result').length == 2", timeout=30_000)
    text = page.inner_text("#results")
    assert "astronaut_photo.jpg" in text and "no_face_coffee.jpg" in text
    assert "No face was found" in text
    assert any(d in text.lower() for d in ("face 1: accept", "face 1: ambiguous", "face 1: reject"))
    assert page.locator(".bar").count() == 8  # the astronaut's distribution over the 8 emotions
    # the canvas holds the photo with a coloured box drawn on it (not blank)
    drawn = page.evaluate("""() => { const c = document.querySelector('.result:last-child canvas') || document.querySelector('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) { if (d[i] !== d[0] || d[i+1] !== d[1]) n++; } return n; }""")
    assert drawn > 1000
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert not failed, f"requests failed (the page must work offline): {failed}"


def test_api_docs_load_offline(browser, server):
    page = browser.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)  # rendered from local assets, no CDN
    assert "/v1/route" in page.inner_text(".swagger-ui")
    assert not failed, f"requests failed: {failed}"
