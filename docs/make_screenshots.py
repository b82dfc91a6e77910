"""The README's screenshots of the console, from the embedded demo.

    .venv/bin/python docs/make_screenshots.py          # writes docs/console.png

Runs ``disengage demo`` as fast as it goes, with its console on a free port,
until the uplift of all alerts has an interval (both groups of the 10%
holdout past 30 alerted sessions; a few minutes), then takes the page in
Debian's Chromium at 1366x900 (the whole page).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(limit_s: float = 900.0) -> int:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--speed", "100000", "--plain",
         "--no-browser", "--console-port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            time.sleep(5)
            try:
                with urllib.request.urlopen(url + "api/snapshot", timeout=10) as resp:
                    snap = json.loads(resp.read())
            except OSError:
                continue
            overall = [r for r in snap["uplift"] if r["dimension"] == "all"]
            if overall and overall[0]["difference"] is not None and snap["hotspots"]:
                break
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(url)
            page.wait_for_selector("#alerts li.alert")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ROOT / "docs" / "console.png"), full_page=True)
            browser.close()
    finally:
        demo.terminate()
        demo.wait(30)
    print(f"wrote {ROOT / 'docs' / 'console.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
