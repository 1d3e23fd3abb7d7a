"""The dashboard in a real browser is private by default and reads only what it is allowed to.

One real server (``streamlit run app.py`` with the project's ``.streamlit/config.toml`` and
no ``--server.address``), its home folder, data folder, results database and run folders
in a temporary folder, and Debian's Chromium through Playwright:

* the server listens on 127.0.0.1 only (its listening sockets, read with psutil);
* Explore and Run given ``/etc``, a temporary folder outside the roots and a symbolic link
  from inside the data folder to it show the one refusal and nothing else;
* a ``?source=`` link to a folder of photos reads none of its files (their access times,
  set to 2001, stay) until **Check folder** is pressed, and then does;
* a results file of wrong types is refused with its first problem, and one whose names
  carry Markdown links, a remote image and control characters shows them as text: no
  link, no image, no request to the attacker's host.

Chromium is Debian's (``/usr/bin/chromium``); the browser tests are skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from test_e2e_browser import CHROMIUM, CHROMIUM_ARGS, free_port, settle, wait_until_healthy

from storage.bench import Experiment, ResultsDB, run_experiment

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "data" / "imagenet-sample").rglob("*.JPEG"))[:3]
OLD = 1_000_000_000  # an access time long before the files were written: any read of them moves it
REFUSAL = "is outside the allowed folders; add it to IMAGE_STORAGE_LAB_ROOTS"
HOSTILE = "[click](http://evil.example/x) ![pixel](http://evil.example/pixel.png) :red[red] \x1b[31mANSI"

browser_only = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The dashboard as started from README, in a folder of its own; yields (url, folder, process)."""
    folder = tmp_path_factory.mktemp("private-dashboard")
    for name in ("home", "data", "outside"):
        (folder / name).mkdir()
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IMAGE_STORAGE_LAB_")}
    environment.update(
        HOME=str(folder / "home"),
        IMAGE_STORAGE_LAB_DATA=str(folder / "data"),
        IMAGE_STORAGE_LAB_DB=str(folder / "results.sqlite"),
        IMAGE_STORAGE_LAB_RUNS=str(folder / "data" / "runs"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
    ]
    log = folder / "streamlit.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process, log)
        yield f"http://127.0.0.1:{port}", folder, process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield page
    page.close()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def visible_text(page, text: str, timeout: float = 30_000) -> None:
    expect(page.get_by_text(text).first).to_be_visible(timeout=timeout)


def test_the_server_listens_on_127_0_0_1_only(server):
    url, _, process = server
    port = int(url.rsplit(":", 1)[1])
    listening = {
        (connection.laddr.ip, connection.laddr.port)
        for connection in psutil.Process(process.pid).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    }
    assert listening == {("127.0.0.1", port)}, listening


@browser_only
def test_paths_outside_the_roots_get_the_one_refusal(server, page):
    url, folder, _ = server
    link = folder / "data" / "link-out"
    link.symlink_to(folder / "outside", target_is_directory=True)
    for address, path in (
        ("Explore?backend=lmdb&path=", "/etc"),
        ("Explore?backend=lmdb&path=", str(link)),
        ("Run?formats=lmdb&source=", "/etc"),
        ("Run?formats=lmdb&source=", str(folder / "outside")),
        ("Run?formats=lmdb&source=", str(link)),
    ):
        page.goto(f"{url}/{address}{path}", timeout=60_000)
        visible_text(page, f"{path} {REFUSAL}")
        settle(page)
        body = page.inner_text("[data-testid='stMain']")
        assert body.count(REFUSAL) == 1, body
        assert page.locator("[data-testid='stException']").count() == 0
        assert "exist" not in body and "No such" not in body and "Permission" not in body
        assert page.locator("[data-testid='stImage']").count() == 0


@browser_only
def test_a_source_link_reads_no_photo_until_check_folder(server, page):
    url, folder, _ = server
    photos = folder / "data" / "photos"
    files = []
    for index, photo in enumerate(PHOTOS):
        target = photos / ("cats" if index % 2 else "dogs") / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
        files.append(target)
    watched = [*files, *{file.parent for file in files}, photos]
    for path in watched:
        os.utime(path, (OLD, path.stat().st_mtime))
    page.goto(f"{url}/Run?formats=lmdb&max_count=1&ops=write_batch&encoding=source&source={photos}", timeout=60_000)
    check = page.get_by_role("button", name="Check folder")
    check.wait_for(timeout=30_000)
    settle(page)
    assert [path for path in watched if path.stat().st_atime != OLD] == []  # nothing listed, nothing read
    assert page.get_by_role("button", name="Run benchmark").is_disabled()
    check.click()
    visible_text(page, "3 images, 2 classes")
    assert [path for path in files if path.stat().st_atime == OLD] == []  # read now, once asked


def exported_run(folder: Path) -> list[dict]:
    """The JSON export of a real run (LMDB, 5 bundled CIFAR-10 images) made in its own database."""
    experiment = Experiment(
        backends=["lmdb"], counts=[5], operations=["write_batch"], repeats=1, source="sample",
        work_dir=str(folder / "runs"),
    )  # fmt: skip
    with ResultsDB(folder / "source.sqlite") as db:
        return json.loads(db.export_json([run_experiment(experiment, db).run_id]))


@browser_only
def test_results_files_are_checked_and_their_names_shown_as_text(server, page, tmp_path):
    url, _, _ = server
    rows = exported_run(tmp_path)
    wrong, hostile = json.loads(json.dumps(rows)), rows
    wrong[0]["count"] = "many"
    for row in hostile:
        row["run"]["source"]["description"] = HOSTILE
        row["run"]["error"] = HOSTILE
    files = {}
    for name, content in (("wrong", wrong), ("hostile", hostile)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(content))
    requested = []
    page.route(re.compile(r"evil\.example"), lambda route: (requested.append(route.request.url), route.abort()))
    page.on("request", lambda request: requested.append(request.url) if "evil.example" in request.url else None)
    page.goto(f"{url}/Results", timeout=60_000)

    for name, expected in (
        ("wrong", "The file cannot be imported: measurement 0 of the JSON: field 'count' is 'many'"),
        ("hostile", "Imported 1 run(s)."),
    ):
        page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(files[name]))
        # The upload reruns the page: a click while it runs is lost (the second file's Import did nothing
        # in one CI run), so press Import once the file is listed and the page has settled.
        visible_text(page, f"{name}.json")
        settle(page)
        importing = page.get_by_role("button", name="Import")
        expect(importing).to_be_enabled(timeout=30_000)
        importing.click()
        visible_text(page, expected)
    settle(page)  # the import's rerun redraws the runs it selected: the expander below is drawn anew
    page.get_by_text("About the selected runs").click()
    visible_text(page, ":red[red] \\x1b[31mANSI")
    settle(page)
    body = page.inner_text("[data-testid='stMain']").replace("\u2060", "")  # the invisible joiners that stop autolinks
    assert "[click](http://evil.example/x) ![pixel](http://evil.example/pixel.png) :red[red] \\x1b[31mANSI" in body
    assert page.locator("a[href*='evil']").count() == 0
    assert page.locator("img[src*='evil']").count() == 0
    assert requested == []
    assert page.locator("[data-testid='stException']").count() == 0
