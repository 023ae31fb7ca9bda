"""Screenshot of the web page after dropping the example photos, for the README.

    apt-get install chromium && pip install playwright && python scripts/screenshot_page.py

Starts ``ferroute serve`` with the embedded default model on a free loopback port, uploads
``examples/astronaut_photo.jpg`` and ``examples/ambiguous_face.png`` through the page in
headless Chromium and writes ``docs/web_page.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from ferroute.serve.app import start_local_server

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    proc, url = start_local_server(env=dict(os.environ, FERROUTE_API_TOKEN=""))
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = b.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url + "/")
            page.set_input_files("#files", [str(ROOT / "examples" / "ambiguous_face.png"), str(ROOT / "examples" / "astronaut_photo.jpg")])
            page.wait_for_function("document.querySelectorAll('.result canvas').length == 2", timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(ROOT / "docs" / "web_page.png"), full_page=True)
            b.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(ROOT / "docs" / "web_page.png")


if __name__ == "__main__":
    main()
