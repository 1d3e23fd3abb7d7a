"""Several processes at one store: one writer at a time, readers beside it, a writer killed, a store replaced.

Every test here starts real interpreters (``subprocess``, a fresh Python each, so formats
that must not be forked work too) that open the store as a user's program would. They talk
to the test through files in the test's folder: a child writes ``ready`` (its pid) when it
reached the point the test waits for, and waits for ``go`` before it goes on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from .. import errors
from ..registry import open_store
from .fixtures import ConformanceFixtures
from .support import assert_same_images, write_store

WAIT_SECONDS = 120  # for a child to start (importing a format's library on a loaded machine) and reach its step

CHILD_HELPERS = """
import os, time
from pathlib import Path
from typing import ClassVar
from storage.datasets import load_cifar10, SAMPLE_CIFAR10_DIR
images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)

def signal_ready(folder, text=None):
    (Path(folder) / "ready.tmp").write_text(text or str(os.getpid()))
    os.replace(Path(folder) / "ready.tmp", Path(folder) / "ready")

def wait_for_go(folder):
    while not (Path(folder) / "go").exists():
        time.sleep(0.01)
"""


class ChildProcess:
    """A fresh interpreter running a test's script, and the files it signals through."""

    def __init__(self, script: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_ready(self) -> str:
        """What the child wrote to ``ready`` once it reached its step (its pid, by default)."""
        deadline = time.monotonic() + WAIT_SECONDS
        ready = self.folder / "ready"
        while not ready.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the child ended ({self.process.returncode}): {self.process.stderr.read()}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError("the child did not get ready in time")
            time.sleep(0.01)
        return ready.read_text()

    def go(self) -> None:
        (self.folder / "go").touch()

    def finish(self) -> tuple[int, str, str]:
        try:
            out, err = self.process.communicate(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return self.process.returncode, out, err


class ProcessTests(ConformanceFixtures):
    """One writer per store across processes; readers during writes; a writer killed while it appends and replaces.

    Each test starts one interpreter (a fresh one costs seconds on a loaded machine, and FFCV
    compiles for seconds more in each process that writes a file). Two processes opening a
    store at the same instant is the lock's own race, the same for every backend (the lock is
    taken before a backend opens a file): ``tests/test_integrity.py`` races two of them.
    """

    same_process_code_as: ClassVar[str | None] = None
    """A registered backend whose class this backend's class extends without changing how it opens,
    writes, commits or rolls back: these cases, which test just that, then run on that one only."""

    def skip_where_another_backend_runs_it(self, backend: str) -> None:
        if self.same_process_code_as:
            pytest.skip(
                f"{backend} opens, writes, commits and rolls back with {self.same_process_code_as}'s code "
                f"(its class changes only the codec or the reads): the process cases run on {self.same_process_code_as}"
            )

    def start_child(self, backend: str, body: str, folder: Path) -> ChildProcess:
        return ChildProcess(self.fresh_interpreter_script(backend, CHILD_HELPERS + textwrap.dedent(body)), folder)

    # -- one writer at a time, readers beside it --------------------------------------------------------

    def test_one_writer_at_a_time_and_readers_beside_it(self, backend, info, tmp_path, cifar):
        """Another process is midway through a batch: writers here are refused naming its pid, and so is a
        reader opened now (where it appends; a replacement leaves the old store to read); a reader opened
        before keeps its images throughout; the write then goes in whole."""
        self.skip_where_another_backend_runs_it(backend)
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images[:12], labels[:12])
        early_reader = open_store(backend, path)
        early_reader.read_all()  # a reader in use, with whatever it keeps open
        mode = "a" if info.appendable else "w"
        child = self.start_child(
            backend,
            f"""
            storage.store_class({backend!r}).chunk_images = 8
            paused = []
            def pause(done, total):
                if not paused:  # after the first chunk
                    paused.append(done)
                    signal_ready({str(tmp_path / "child")!r})
                    wait_for_go({str(tmp_path / "child")!r})
            with storage.open_store({backend!r}, {str(path)!r}, {mode!r}) as store:
                store.write_batch(images[12:60], labels[12:60], progress=pause)
            """,
            tmp_path / "child",
        )
        pid = child.wait_ready()
        for refused_mode in ("a", "w") if info.appendable else ("w",):
            with pytest.raises(errors.StoreInUseError, match=f"being written by pid {pid}") as caught:
                open_store(backend, path, refused_mode)
            assert isinstance(caught.value, errors.StorageError)
        if info.appendable:
            with pytest.raises(errors.StoreInUseError, match=f"being written by pid {pid}; open it when that write"):
                open_store(backend, path)
        else:  # the new store is built beside the old one, which is still there to read
            with open_store(backend, path) as store:
                assert_same_images(info, images[:12], store.read_all()[0])
        assert_same_images(info, images[:12], early_reader.read_all()[0])
        child.go()
        code, _, err = child.finish()
        assert code == 0, err
        read, read_labels = early_reader.read_all()  # the images committed when it opened, still
        assert len(early_reader) == 12
        assert_same_images(info, images[:12], read)
        np.testing.assert_array_equal(read_labels, labels[:12])
        early_reader.close()
        first = 0 if info.appendable else 12
        with open_store(backend, path) as store:
            read, read_labels = store.read_all(verify=True)
            assert_same_images(info, images[first:60], read)
            np.testing.assert_array_equal(read_labels, labels[first:60])

    # -- a writer killed ------------------------------------------------------------------------------

    def test_a_killed_writer_leaves_what_was_committed(self, backend, info, tmp_path, cifar):
        """SIGKILL while one store takes an append and another is replaced ("w" over it): nobody holds either.

        The appended store gets the interrupted-write advice, not "being written", and "a"
        recovers it at once; the replaced store is the old one, whole, and the next "w"
        replaces it cleanly (readers of the old store see it until the new one is closed).
        """
        self.skip_where_another_backend_runs_it(backend)
        images, labels = cifar
        appended, replaced = tmp_path / "appended", tmp_path / "replaced"
        write_store(backend, replaced, images[:20], labels[:20])
        replace_and_die = f"""
            def die(done, total):
                if done >= 16:
                    os.kill(os.getpid(), signal.SIGKILL)
            def replace_and_die():
                store = storage.open_store({backend!r}, {str(replaced)!r}, "w")
                store.write_batch(images[100:140], labels[100:140], progress=die)
            """
        if info.appendable:  # the replacement starts midway through the append, so both are under way
            write_store(backend, appended, images[:12], labels[:12])
            body = f"""
            def then_replace(done, total):
                if done >= 16:
                    replace_and_die()
            store = storage.open_store({backend!r}, {str(appended)!r}, "a")
            store.write_batch(images[12:100], labels[12:100], progress=then_replace)
            """
        else:
            body = "replace_and_die()\n"
        script = "import signal\nstorage.store_class(" + repr(backend) + ").chunk_images = 8\n"
        child = self.start_child(
            backend, script + textwrap.dedent(replace_and_die) + textwrap.dedent(body), tmp_path / "child"
        )
        code, _, err = child.finish()
        assert code == -signal.SIGKILL, err
        if info.appendable:
            with pytest.raises(errors.IncompleteStoreError, match="interrupted after 12 images"):
                open_store(backend, appended)
            with open_store(backend, appended, "a") as store:
                assert len(store) == 12
            with open_store(backend, appended) as store:
                assert store.verify().ok
                assert_same_images(info, images[:12], store.read_all()[0])
        with open_store(backend, replaced) as store:  # the old store, whole
            assert len(store) == 20
            assert_same_images(info, images[:20], store.read_all()[0])
        reader = open_store(backend, replaced)
        with open_store(backend, replaced, "w") as store:
            store.write_batch(images[100:105], labels[100:105])
            with open_store(backend, replaced) as other:  # the old store until the new one is closed
                assert len(other) == 20
            assert_same_images(info, images[:20], reader.read_all()[0])
            reader.close()
        with open_store(backend, replaced) as store:
            assert_same_images(info, images[100:105], store.read_all()[0])
            assert store.verify().ok
        assert sorted(entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".replaced.")) == []
        manifest = json.loads((replaced / "store.json").read_text())
        assert manifest["count"] == 5 and manifest["state"] == "complete"
