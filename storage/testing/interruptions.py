"""Interrupted writes: the previous store comes back, or one that says it is incomplete.

A write cut off by an exception (or Ctrl-C) is rolled back in the same process; a process
killed midway (no chance to clean up) leaves a manifest marked ``"writing"``, which refuses
to be read and is recovered, keeping the committed images, by reopening with mode ``"a"``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .. import errors
from ..registry import open_store, store_class
from .fixtures import ConformanceFixtures
from .support import Interrupt, assert_same_images, write_store


class InterruptionTests(ConformanceFixtures):
    """Writes stopped by an exception, by Ctrl-C or by SIGKILL; a damaged manifest."""

    @pytest.fixture
    def small_chunks(self, backend, monkeypatch):
        """Stream batches in chunks of 8 so a write can be cut off midway."""
        monkeypatch.setattr(store_class(backend), "chunk_images", 8)

    # -- a write cut off in this process -----------------------------------------------------------

    @pytest.mark.parametrize("interruption", [Interrupt, KeyboardInterrupt])
    def test_write_interrupted_midway_keeps_the_previous_store(
        self, backend, info, stored, cifar, small_chunks, interruption
    ):
        def stop_after_first_chunk(done: int, total: int) -> None:
            if done >= 8:
                raise interruption()

        images, labels = cifar
        with pytest.raises(interruption):
            stored.write_batch(images[12:60], labels[12:60], progress=stop_after_first_chunk)
        assert len(stored) == 12
        stored.write_batch(images[12:14], labels[12:14])  # the store still takes writes
        assert len(stored) == 14
        stored.close()
        with open_store(backend, stored.path) as store:
            read, read_labels = store.read_all()
            assert_same_images(info, images[:14], read)
            np.testing.assert_array_equal(read_labels, labels[:14])

    def test_first_write_interrupted_leaves_an_empty_store(self, backend, info, tmp_path, cifar, small_chunks):
        def stop(done: int, total: int) -> None:
            raise Interrupt()

        with open_store(backend, tmp_path / "s", "w") as store:
            with pytest.raises(Interrupt):
                store.write_batch(cifar[0][:40], cifar[1][:40], progress=stop)
            assert len(store) == 0
        with open_store(backend, tmp_path / "s") as store:
            assert len(store) == 0

    # -- a writing process killed: the store says it is incomplete, and recovers -------------------

    def test_killed_write_reports_an_incomplete_store(self, backend, info, tmp_path, cifar):
        """A process killed midway (no chance to clean up) leaves a store that says so."""
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images[:12], labels[:12])
        mode = "a" if info.appendable else "w"
        script = self.fresh_interpreter_script(
            backend,
            textwrap.dedent(
                f"""
                import os, signal
                import numpy as np
                from storage.datasets import load_cifar10, SAMPLE_CIFAR10_DIR
                images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
                storage.store_class({backend!r}).chunk_images = 8
                def die(done, total):
                    if done >= 16:
                        os.kill(os.getpid(), signal.SIGKILL)
                store = storage.open_store({backend!r}, {str(path)!r}, {mode!r})
                store.write_batch(images[12:100], labels[12:100], progress=die)
                """
            ),
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == -signal.SIGKILL, result.stderr
        manifest = json.loads((path / "store.json").read_text())
        assert manifest["state"] == "writing"
        with pytest.raises(errors.IncompleteStoreError, match="interrupted") as caught:
            open_store(backend, path, "r")
        assert isinstance(caught.value, ValueError)
        if not info.appendable:
            return
        with open_store(backend, path, "a") as store:  # recovers the committed images
            assert len(store) == 12
            store.write_batch(images[12:20], labels[12:20])
        with open_store(backend, path) as store:
            read, read_labels = store.read_all()
            assert_same_images(info, images[:20], read)
            np.testing.assert_array_equal(read_labels, labels[:20])

    def test_killed_write_one_loses_at_most_the_unwritten_group(self, backend, info, tmp_path, cifar):
        """write_one then SIGKILL: groups already written stay; the store opens after recovery."""
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images[:12], labels[:12])
        if not info.appendable:
            pytest.skip(f"{backend} cannot append")
        script = self.fresh_interpreter_script(
            backend,
            textwrap.dedent(
                f"""
                import os, signal
                from storage.datasets import load_cifar10, SAMPLE_CIFAR10_DIR
                images, labels, _ = load_cifar10(SAMPLE_CIFAR10_DIR)
                store = storage.open_store({backend!r}, {str(path)!r}, "a")
                store.write_behind_images = 8
                for image_id in range(12, 32):
                    store.write_one(images[image_id], labels[image_id])
                os.kill(os.getpid(), signal.SIGKILL)
                """
            ),
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == -signal.SIGKILL, result.stderr
        if store_class(backend).write_behind_images:
            # 20 images in groups of 8: two groups written, the last 4 were only in memory
            with open_store(backend, path, "r") as store:
                assert len(store) == 12 + 16
                read, read_labels = store.read_all()
                assert_same_images(info, images[:28], read)
                np.testing.assert_array_equal(read_labels, labels[:28])
        with open_store(backend, path, "a") as store:  # recovery: keeps what was committed
            kept = len(store)
            assert 12 <= kept <= 32
            store.write_batch(images[kept : kept + 3], labels[kept : kept + 3])
        with open_store(backend, path) as store:
            read, read_labels = store.read_all()
            assert_same_images(info, images[: kept + 3], read)
            np.testing.assert_array_equal(read_labels, labels[: kept + 3])

    def test_damaged_manifest_is_reported(self, backend, tmp_path, cifar):
        write_store(backend, tmp_path / "s", cifar[0][:2], [0, 1])
        (tmp_path / "s" / "store.json").write_text("{not json")
        with pytest.raises(errors.CorruptDataError, match="damaged"):
            open_store(backend, tmp_path / "s")
