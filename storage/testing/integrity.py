"""Integrity: damage is found and named, never read back as wrong pixels; metadata is checked; disks fill up.

* Checksums: ``verify()`` and ``read_*(verify=True)`` on good stores, stores with flipped bits
  (a forked child, or a fresh interpreter for a backend that must not be forked, runs the
  trials, so a format library that crashes on damage fails the test instead of the run), overwritten data files, and stores written before checksums.
* The manifest: a count that does not match the data, and values of the wrong type or range.
* A small file system (a tmpfs mounted for the test, where this process may mount one: root on
  Linux; skipped with the reason elsewhere): a write that fills it, and the same disk read-only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .. import checksums, errors
from ..lifecycle import StoreLifecycleMixin
from ..registry import open_store, store_class
from .fixtures import ConformanceFixtures
from .support import assert_same_images, mounted_tmpfs, remounted_read_only, write_store

FLIP_TRIALS = 8
CUT_FILES = 6
SKIPPED_WHEN_FLIPPED = {"store.json", "lock.mdb", ".writer.lock"}  # the manifest is checked by its schema and the data


def data_files(folder: Path) -> list[Path]:
    """The files a store keeps its images (and their metadata) in: every file but the manifest and lock files."""
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name not in SKIPPED_WHEN_FLIPPED)


def flip_one_bit(folder: Path, rng: np.random.Generator) -> str:
    """Flip one bit at a random byte of the store's data files (weighted by size); say where."""
    files = [path for path in data_files(folder) if path.stat().st_size]
    sizes = np.array([path.stat().st_size for path in files])
    at = int(rng.integers(sizes.sum()))
    index = int(np.searchsorted(np.cumsum(sizes), at, side="right"))
    offset = at - int(sizes[:index].sum())
    with open(files[index], "r+b") as file:
        file.seek(offset)
        byte = file.read(1)[0]
        file.seek(offset)
        file.write(bytes([byte ^ (1 << int(rng.integers(8)))]))
    return f"{files[index].relative_to(folder)} byte {offset}"


def run_flip_trials(backend: str, pristine: str, work: str, trials: int) -> list[dict]:
    """Each trial: a copy of the store with one bit flipped, then open, verify and read. What each found."""
    with open_store(backend, pristine) as store:
        expected, expected_labels = store.read_all()
    results = []
    rng = np.random.default_rng(2026)
    for trial in range(trials):
        folder = Path(work) / f"trial-{trial}"
        shutil.copytree(pristine, folder)
        where = flip_one_bit(folder, rng)
        result = {"where": where}
        try:
            with open_store(backend, folder) as store:
                report = store.verify()
                result["verify_ok"] = report.ok
                if report.ok:
                    got, got_labels = store.read_all()
                    result["same"] = bool(np.array_equal(got, expected) and np.array_equal(got_labels, expected_labels))
                else:
                    try:
                        store.read_all(verify=True)
                        result["verified_read"] = "gave images"
                    except errors.StorageError as error:
                        result["verified_read"] = type(error).__name__
        except errors.StorageError as error:
            result["refused"] = f"{type(error).__name__}: {error}"
        except Exception as error:  # noqa: BLE001 - reported: every error must be the library's
            result["raw_error"] = f"{type(error).__name__}: {error}"
        results.append(result)
        shutil.rmtree(folder, ignore_errors=True)
    return results


def in_a_forked_child(function, *arguments):
    """``function(*arguments)`` in a forked child (no interpreter to start), its JSON result through a pipe.

    A format library that crashes on a damaged file (SIGBUS, a segfault) kills the child, not the test run.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as pipe:
                pipe.write(json.dumps(function(*arguments)))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and answer, f"a damaged file crashed the reading process ({status})"
    return json.loads(answer)


def cut_short_trials(backend: str, pristine: str, work: str) -> list[dict]:
    """Each data file of the store cut to half its size in turn: what opening, verifying and reading gave."""
    with open_store(backend, pristine) as store:
        expected, expected_labels = store.read_all()
    files = data_files(Path(pristine))
    if len(files) > CUT_FILES:  # one file per image: a few of them, spread over the store, show the same
        files = [files[index] for index in np.linspace(0, len(files) - 1, CUT_FILES).astype(int)]
    results = []
    for index, file in enumerate(files):
        folder = Path(work) / f"cut-{index}"
        shutil.copytree(pristine, folder)
        damaged = folder / file.relative_to(pristine)
        os.truncate(damaged, damaged.stat().st_size // 2)
        result = {"file": str(file.relative_to(pristine))}
        try:
            with open_store(backend, folder) as store:
                result["verify_ok"] = store.verify().ok
                got, got_labels = store.read_all()
                result["same"] = bool(np.array_equal(got, expected) and np.array_equal(got_labels, expected_labels))
        except errors.StorageError as error:
            result["refused"] = type(error).__name__
        except Exception as error:  # noqa: BLE001 - reported: every error must be the library's
            result["raw_error"] = f"{type(error).__name__}: {error}"
        results.append(result)
        shutil.rmtree(folder, ignore_errors=True)
    return results


class IntegrityTests(ConformanceFixtures):
    """Checksums, verify, validated manifests, full and read-only disks."""

    # -- checksums and verify -----------------------------------------------------------------------

    def test_verify_finds_no_damage_in_a_good_store(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images[:150], labels[:150])
        if info.appendable:
            with open_store(backend, path, "a") as store:
                store.write_batch(images[150:190], labels[150:190])
                store.write_one(images[190], labels[190])
        count = 191 if info.appendable else 150
        with open_store(backend, path) as store:
            report = store.verify()
            assert report.ok, report.describe()
            assert (report.checked, report.unchecked, report.images) == (count, 0, count)
            assert "no damage found" in report.describe()

    def test_verified_reads_give_what_plain_reads_give(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images, labels)
        ids = np.random.default_rng(3).permutation(len(images))[:40]
        with open_store(backend, path) as store:
            everything, all_labels = store.read_all(verify=True)
            assert_same_images(info, images, everything)
            np.testing.assert_array_equal(all_labels, labels)
            plain, plain_labels = store.read_batch(ids)
            checked, checked_labels = store.read_batch(ids, verify=True)
            np.testing.assert_array_equal(checked, plain)
            np.testing.assert_array_equal(checked_labels, plain_labels)
            image, label = store.read_one(int(ids[0]), verify=True)
            np.testing.assert_array_equal(image, plain[0])
            assert label == labels[ids[0]]
            out = np.zeros_like(images)
            assert store.read_all(out=out, verify=True)[0] is out

    def test_a_flipped_bit_is_found_or_harmless(self, backend, info, tmp_path, cifar):
        """One bit flipped anywhere in the data files: verify names the damage, or every image reads back right."""
        images, labels = cifar
        pristine = tmp_path / "pristine"
        write_store(backend, pristine, images[:60], labels[:60])
        if store_class(backend).fork_safe:
            trials = in_a_forked_child(run_flip_trials, backend, str(pristine), str(tmp_path), FLIP_TRIALS)
        else:
            script = self.fresh_interpreter_script(
                backend,
                "import json\nfrom storage.testing.integrity import run_flip_trials\n"
                f"print(json.dumps(run_flip_trials({backend!r}, {str(pristine)!r}, {str(tmp_path)!r}, {FLIP_TRIALS})))\n",
            )
            result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"a flipped bit crashed the reading process: {result.stderr[-2000:]}"
            trials = json.loads(result.stdout.strip().splitlines()[-1])
        for trial in trials:
            assert "raw_error" not in trial, trial
            if trial.get("verify_ok"):
                assert trial["same"], f"wrong images read back without an error: {trial}"
            elif "verify_ok" in trial:
                assert trial["verified_read"] in ("CorruptDataError", "NoChecksumError", "BadShardError"), trial

    def test_a_data_file_cut_short_is_named_never_read_as_images(self, backend, info, tmp_path, cifar):
        """Each data file cut to half its size: refused (a StorageError), found by verify, or harmless."""
        images, labels = cifar
        pristine = tmp_path / "pristine"
        write_store(backend, pristine, images[:60], labels[:60])
        if store_class(backend).fork_safe:
            trials = in_a_forked_child(cut_short_trials, backend, str(pristine), str(tmp_path))
        else:
            trials = cut_short_trials(backend, str(pristine), str(tmp_path))
        assert trials
        for trial in trials:
            assert "raw_error" not in trial, trial
            if "refused" not in trial:
                assert trial["same"] or not trial["verify_ok"], f"wrong images read back without an error: {trial}"

    def test_overwritten_data_is_found_by_verify(self, backend, info, tmp_path, cifar):
        """The middle of the biggest data file overwritten with random bytes: never a good report, never wrong pixels."""
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images[:60], labels[:60])
        biggest = max(data_files(path), key=lambda file: file.stat().st_size)
        size = biggest.stat().st_size
        noise = np.random.default_rng(5).integers(0, 256, size // 2, dtype=np.uint8).tobytes()
        with open(biggest, "r+b") as file:
            file.seek(size // 4)
            file.write(noise)
        try:
            store = open_store(backend, path)
        except errors.StorageError:
            return  # found on open
        with store:
            report = store.verify()
            assert not report.ok, f"{biggest.name} overwritten, yet verify found nothing"
            assert report.damaged and "DAMAGED" in report.describe()
            with pytest.raises(errors.StorageError):
                store.read_all(verify=True)
            with pytest.raises(errors.CorruptDataError):
                report.raise_if_damaged()

    def test_images_written_before_checksums_are_read_but_not_verified(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images[:30], labels[:30])
        manifest = json.loads((path / "store.json").read_text())
        del manifest["checksums"]  # as a store of an earlier version of the library
        (path / "store.json").write_text(json.dumps(manifest))
        (path / checksums.LOG_NAME).unlink()
        with open_store(backend, path) as store:
            report = store.verify()
            assert report.ok and (report.checked, report.unchecked) == (0, 30)
            with pytest.raises(errors.NoChecksumError, match="has no checksum") as caught:
                store.read_one(3, verify=True)
            assert isinstance(caught.value, ValueError)
        if not info.appendable:
            return
        with open_store(backend, path, "a") as store:  # appended images get checksums
            store.write_batch(images[30:40], labels[30:40])
        with open_store(backend, path) as store:
            report = store.verify()
            assert report.ok and (report.checked, report.unchecked) == (10, 30)
            assert_same_images(info, images[30:40], store.read_batch(range(30, 40), verify=True)[0])

    # -- the manifest -----------------------------------------------------------------------------

    @pytest.mark.parametrize("recorded", [20, 50])
    def test_a_count_that_does_not_match_the_data_is_refused_before_any_append(
        self, backend, info, tmp_path, cifar, recorded
    ):
        if store_class(backend)._stored_count is StoreLifecycleMixin._stored_count:
            pytest.skip(
                f"{backend} does not say how many images its files hold (it does not override _stored_count), "
                "so its manifest's count cannot be checked against them"
            )
        images, labels = cifar
        path = tmp_path / "s"
        write_store(backend, path, images[:40], labels[:40])
        manifest = json.loads((path / "store.json").read_text())
        manifest["count"] = recorded
        (path / "store.json").write_text(json.dumps(manifest))
        for mode in ("r", "a") if info.appendable else ("r",):
            with pytest.raises(errors.CorruptDataError) as caught:
                open_store(backend, path, mode)
            assert str(recorded) in str(caught.value) and "40" in str(caught.value), caught.value
        manifest["count"] = 40
        (path / "store.json").write_text(json.dumps(manifest))
        with open_store(backend, path) as store:  # nothing was changed by the refusals
            assert_same_images(info, images[:40], store.read_all()[0])

    @pytest.mark.parametrize(
        ("field", "value", "words"),
        [
            ("count", 2.7, "not a whole number"),
            ("count", "1e400", "not a whole number"),
            ("count", -5, "outside"),
            ("count", 10**18, "outside"),
            ("count", True, "not a whole number"),
            ("options", [1, 2], "not a mapping"),
            ("backend_state", "x", "not a mapping"),
            ("state", "finished", "not 'complete' or 'writing'"),
            ("format_version", 99, "newer version"),
        ],
    )
    def test_manifest_values_are_checked(self, backend, tmp_path, cifar, field, value, words):
        path = tmp_path / "s"
        write_store(backend, path, cifar[0][:3], cifar[1][:3])
        text = (path / "store.json").read_text()
        manifest = json.loads(text)
        manifest[field] = value
        damaged = json.dumps(manifest).replace('"1e400"', "1e400")
        (path / "store.json").write_text(damaged)
        with pytest.raises(errors.StorageError, match=words) as caught:
            open_store(backend, path)
        assert isinstance(caught.value, ValueError)

    # -- a full disk and a read-only one --------------------------------------------------------------

    def test_a_full_disk_raises_store_full_and_keeps_the_store(self, backend, info, tmp_path, cifar):
        """A batch larger than the free space: StoreFullError, the committed images kept, the space given back."""
        images, labels = cifar
        with mounted_tmpfs(tmp_path / "disk", 12 * 2**20) as disk:
            path = disk / "s"
            write_store(backend, path, images[:12], labels[:12])
            free_before = shutil.disk_usage(disk).free
            big = np.random.default_rng(11).integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)  # 15 MB, no format
            big_labels = np.arange(5000) % 10  # compresses noise
            mode = "a" if info.appendable else "w"
            with pytest.raises(errors.StoreFullError, match="is full") as caught:
                with open_store(backend, path, mode) as store:
                    store.write_batch(big, big_labels)
            assert isinstance(caught.value, OSError) and str(disk / "s") in str(caught.value)
            leftovers = [
                entry.name for entry in disk.rglob("*") if ".tmp" in entry.name or "before-write" in entry.name
            ]
            assert leftovers == []
            assert [entry.name for entry in disk.iterdir()] == ["s"]
            with open_store(backend, path) as store:
                assert len(store) == 12
                assert store.verify().ok
                assert_same_images(info, images[:12], store.read_all()[0])
            assert shutil.disk_usage(disk).free >= free_before - 256 * 1024, "the failed write kept its space"

    def test_a_read_only_disk_refuses_writes_and_still_reads(self, backend, info, tmp_path, cifar):
        images, labels = cifar
        with mounted_tmpfs(tmp_path / "disk", 16 * 2**20) as disk:
            path = disk / "s"
            write_store(backend, path, images[:12], labels[:12])
            with remounted_read_only(disk):
                for mode in ("a", "w") if info.appendable else ("w",):
                    with pytest.raises(errors.StoreNotWritableError, match="cannot write") as caught:
                        open_store(backend, path, mode)
                    assert isinstance(caught.value, PermissionError)
                with open_store(backend, path) as store:
                    assert_same_images(info, images[:12], store.read_all(verify=True)[0])
                    assert store.verify().ok
            assert os.path.exists(path / "store.json")
