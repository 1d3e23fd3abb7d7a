"""End to end in a real browser: ``streamlit run app.py`` and headless Chromium through Playwright.

Starts the dashboard on a free port (results database and run folders in a temporary
folder), opens the Run page with png, lmdb and hdf5 on up to 100 images, presses "Run
benchmark", waits for the charts and the preview images, and saves a full-page screenshot
to ``artifacts/dashboard-run.png`` (git-ignored). With ``UPDATE_README_SCREENSHOT=1`` the
screenshot also replaces ``docs/dashboard.png``, the one the README shows.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``); the test is skipped
when it is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOT = ROOT / "artifacts" / "dashboard-run.png"
README_SCREENSHOT = ROOT / "docs" / "dashboard.png"
FORMATS = {"png": "PNG files + CSV", "lmdb": "LMDB", "hdf5": "HDF5"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not answer /_stcore/health within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def dashboard(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "streamlit.log"
    environment = dict(os.environ)
    environment.update(
        IMAGE_STORAGE_LAB_DB=str(tmp_path / "results.sqlite"),
        IMAGE_STORAGE_LAB_RUNS=str(tmp_path / "runs"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")])),
    )
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
    ]  # fmt: skip
    with open(log, "wb") as output:
        server = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_healthy(url, server, log)
        yield url
    finally:
        # The server and the benchmark processes it started share the session begun above.
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(5)


def settle(page, timeout: float = 30) -> int:
    """Wait until the page has stopped growing and Streamlit is not running; its height."""
    deadline = time.monotonic() + timeout
    last, stable = -1, 0
    while time.monotonic() < deadline:
        running = page.locator("[data-testid='stStatusWidget']").count()
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        stable = stable + 1 if height == last and not running else 0
        if stable >= 4:
            break
        last = height
        time.sleep(0.5)
    return last


def test_run_page_in_a_real_browser(dashboard):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{dashboard}/Run?formats={','.join(FORMATS)}&max_count=100", timeout=60_000)
            run = page.get_by_role("button", name="Run benchmark")
            run.wait_for(timeout=60_000)
            sync_api.expect(run).to_be_enabled(timeout=30_000)
            sync_api.expect(page.get_by_text("Counts: 1, 10, 100")).to_be_visible(timeout=30_000)
            run.click()

            # Three charts (time, images per second, disk use) drawn by vega-embed ...
            page.wait_for_function(
                "() => document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= 3",
                timeout=90_000,
            )
            # ... and the previews: 4 ids read back from each of the 3 stores.
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                ".filter(img => img.complete && img.naturalWidth > 0).length >= 12",
                timeout=90_000,
            )
            page.get_by_text("finished in").wait_for(timeout=90_000)
            height = settle(page)

            body = page.inner_text("body")
            for label in FORMATS.values():
                assert label in body
            assert "✓ verified" in body and "✗ mismatch" not in body
            assert page.locator("[data-testid='stException']").count() == 0
            assert page.locator("[data-testid='stAlertContentError']").count() == 0
            assert "run=" in page.url and "formats=png" in page.url

            page.set_viewport_size({"width": 1400, "height": min(height + 120, 10_000)})
            settle(page)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 50_000
    if os.environ.get("UPDATE_README_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCREENSHOT, README_SCREENSHOT)
