"""The benchmark engine on small counts with the real backends."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import storage
from storage import datasets, open_store, store_class
from storage.bench import (
    Experiment,
    InvalidExperimentError,
    MeasurementRecorded,
    PreviewReady,
    Progress,
    ResultsDB,
    RunFinished,
    RunStarted,
    estimate_experiment,
    run_experiment,
    streaming,
    verify_store,
)
from storage.bench import estimate as estimate_module
from storage.bench.experiment import steps
from storage.cycled import CycledImages
from storage.errors import DiskSpaceError, UnknownBackendError

BACKENDS = ["png", "lmdb", "hdf5"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def experiment(tmp_path: Path, **changes) -> Experiment:
    values = dict(
        backends=BACKENDS, counts=[1, 30], repeats=1, source="sample", work_dir=str(tmp_path / "runs"), preview_ids=3
    )
    values.update(changes)
    return Experiment(**values)


def collect(events: list):
    return events.append


def test_a_small_run_measures_and_verifies_everything(tmp_path: Path) -> None:
    events: list = []
    plan = experiment(tmp_path, caches=["warm", "cold"], repeats=2)
    with ResultsDB(tmp_path / "results.sqlite") as db:
        summary = run_experiment(plan, db, collect(events))
        stored = db.measurements(summary.run_id)
        run = db.get_run(summary.run_id)

    assert summary.status == "finished", summary.error
    assert run.status == "finished" and run.environment["cpu_model"]
    expected = steps(plan)
    assert [(m.backend, m.count, m.operation, m.cache) for m in summary.measurements] == expected
    assert [m.to_dict() for m in stored] == [m.to_dict() for m in summary.measurements]
    for m in summary.measurements:
        assert m.verified and m.error is None, (m.backend, m.operation, m.error)
        assert len(m.samples) == m.repeats == 2
        assert m.seconds_min <= m.seconds_median <= m.seconds_max and m.seconds_iqr >= 0
        assert m.seconds_per_image > 0 and m.images_per_second > 0 and m.mb_per_second > 0
        assert m.allocated_bytes > 0 and m.apparent_bytes > 0 and m.files >= 1 and m.bytes_per_image > 0
        assert m.psnr is None  # all three are lossless
        if m.cache == "cold":
            assert m.evicted in (True, False) and m.resident_bytes is not None
        else:
            assert m.evicted is None
    png_files = {m.files for m in summary.measurements if m.backend == "png" and m.count == 30}
    assert min(png_files) >= 30  # one file per image
    assert not [p for p in Path(summary.run_dir).rglob("*") if p.is_file()]  # its folders go in a later run


def test_events_let_a_ui_follow_the_run(tmp_path: Path) -> None:
    events: list = []
    plan = experiment(tmp_path, operations=["write_batch", "read_all", "read_random", "read_one"])
    summary = run_experiment(plan, on_event=collect(events))
    assert isinstance(events[0], RunStarted) and events[0].total_steps == len(steps(plan))
    assert isinstance(events[-1], RunFinished) and events[-1].status == "finished" and events[-1].error is None
    assert all(event.run_id == summary.run_id for event in events)
    recorded = [e for e in events if isinstance(e, MeasurementRecorded)]
    assert [e.measurement for e in recorded] == summary.measurements
    fractions = [e.fraction for e in events if isinstance(e, Progress)]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0

    previews = [e for e in events if isinstance(e, PreviewReady)]
    assert {(p.backend, p.count) for p in previews} == {(b, c) for b in BACKENDS for c in (1, 30)}
    for count in (1, 30):
        same_count = [p for p in previews if p.count == count]
        assert len({tuple(p.ids) for p in same_count}) == 1  # the same seeded ids from every store
        assert all(p.verified and p.psnr is None and p.class_names[0] == "airplane" for p in same_count)
        assert len(same_count[0].ids) == min(3, count)
    source = datasets.load_source("sample")
    preview = next(p for p in previews if p.count == 30)
    for image_id, image, label in zip(preview.ids, preview.images, preview.labels):
        assert np.array_equal(image, source.images[image_id]) and label == source.labels[image_id]


def test_the_same_seed_reads_the_same_ids(tmp_path: Path) -> None:
    def preview_ids(seed: int) -> list[list[int]]:
        events: list = []
        run_experiment(
            experiment(tmp_path, backends=["hdf5"], counts=[500], seed=seed, operations=["write_batch"]),
            on_event=collect(events),
        )
        return [e.ids for e in events if isinstance(e, PreviewReady)]

    assert preview_ids(7) == preview_ids(7)
    assert preview_ids(7) != preview_ids(8)


def test_keep_leaves_the_stores_and_two_runs_never_share_a_folder(tmp_path: Path) -> None:
    plan = experiment(tmp_path, backends=["hdf5", "png"], counts=[5], keep=True, operations=["write_batch", "read_all"])
    first, second = run_experiment(plan), run_experiment(plan)
    assert first.run_id != second.run_id and first.run_dir != second.run_dir
    for summary in (first, second):
        for backend in ("hdf5", "png"):
            with open_store(backend, Path(summary.run_dir) / backend / "5" / "store") as store:
                assert len(store) == 5


def test_an_image_folder_of_mixed_sizes_is_measured_without_a_buffer(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for index, (name, size) in enumerate([("cat", (20, 30)), ("cat", (32, 32)), ("dog", (17, 9)), ("dog", (40, 24))]):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    plan = experiment(
        tmp_path, counts=[6], source=str(tmp_path / "images"), operations=["write_batch", "read_all", "read_random"]
    )
    summary = run_experiment(plan)
    assert summary.status == "finished", summary.error
    assert all(m.verified for m in summary.measurements)


def test_a_corrupted_png_store_fails_verification(tmp_path: Path) -> None:
    images, labels = datasets.take(datasets.load_source("sample").images, np.arange(5085) % 10, 20)
    path = tmp_path / "png"
    with open_store("png", path, "w") as store:
        store.write_batch(images, labels)
    assert verify_store("png", path, images, labels).verified
    png_files = sorted(p for p in path.rglob("*.png"))
    assert len(png_files) == 20
    victim = png_files[7]
    data = bytearray(victim.read_bytes())
    for offset in range(60, 80):  # inside the compressed pixels
        data[offset] ^= 0xFF
    victim.write_bytes(bytes(data))

    result = verify_store("png", path, images, labels)
    assert not result.verified and result.error


def test_changed_pixels_in_an_hdf5_store_fail_verification(tmp_path: Path) -> None:
    images = np.random.default_rng(2).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(20) % 10
    path = tmp_path / "hdf5"
    with open_store("hdf5", path, "w") as store:
        store.write_batch(images, labels)
    (h5_file,) = [p for p in path.iterdir() if p.suffix in (".h5", ".hdf5")]
    with h5py.File(h5_file, "r+") as file:
        file["images"][11, 5, 5, 0] ^= 1
    result = verify_store("hdf5", path, images, labels)
    assert not result.verified
    assert "image 11 differs from the source in 1 of 3,072 pixel values" in result.error
    sampled = verify_store("hdf5", path, images, labels, ids=[0, 1, 2])
    assert sampled.verified and sampled.checked == 3


def test_a_store_corrupted_during_a_run_fails_it_loudly(tmp_path: Path) -> None:
    plan = experiment(tmp_path, backends=["hdf5"], counts=[40], operations=["write_batch", "read_all", "read_random"])

    def corrupt(event) -> None:
        if isinstance(event, PreviewReady):
            store = Path(plan.work_dir) / event.run_id / "hdf5" / "40" / "store"
            (h5_file,) = [p for p in store.iterdir() if p.suffix in (".h5", ".hdf5")]
            with h5py.File(h5_file, "r+") as file:
                file["images"][3] = 255 - file["images"][3]

    with ResultsDB(tmp_path / "r.sqlite") as db:
        summary = run_experiment(plan, db, corrupt)
        run = db.get_run(summary.run_id)
    assert summary.status == "failed" and run.status == "failed"
    assert summary.error.startswith("VERIFICATION FAILED")
    write, read_all, read_random = summary.measurements
    assert write.verified  # verified right after writing, before the corruption
    assert not read_all.verified and "VERIFICATION FAILED" in read_all.error and "image 3" in read_all.error
    assert read_all.seconds_median is not None  # the time is kept, but flagged
    assert read_random.verified or "image 3" in read_random.error


def test_cancelling_stops_within_a_second_and_cleans_up(tmp_path: Path) -> None:
    cancel = threading.Event()
    events: list = []
    cancelled_at: list[float] = []

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, MeasurementRecorded) and not cancel.is_set():
            cancel.set()  # cancel during the long write_one that follows
            cancelled_at.append(time.perf_counter())

    plan = experiment(tmp_path, backends=["hdf5", "png"], counts=[3000], operations=["write_batch", "write_one"])
    with ResultsDB(tmp_path / "r.sqlite") as db:
        summary = run_experiment(plan, db, on_event, cancel)
        assert db.get_run(summary.run_id).status == "cancelled"
        assert len(db.measurements(summary.run_id)) == 1
    assert time.perf_counter() - cancelled_at[0] < 1.5
    assert summary.status == "cancelled"
    assert isinstance(events[-1], RunFinished) and events[-1].status == "cancelled"
    assert not [p for p in Path(summary.run_dir).rglob("*") if p.is_file()]


def test_an_interrupt_ends_the_run_as_interrupted_at_its_next_check(tmp_path: Path) -> None:
    interrupt = threading.Event()
    interrupted_at: list[float] = []

    def on_event(event) -> None:
        if isinstance(event, MeasurementRecorded) and not interrupt.is_set():
            interrupt.set()  # as the command line's signal handler does, during the write_one that follows
            interrupted_at.append(time.perf_counter())

    plan = experiment(tmp_path, backends=["png"], counts=[3000], operations=["write_batch", "write_one"])
    with ResultsDB(tmp_path / "r.sqlite") as db:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(plan, db, on_event, interrupt=interrupt)
        (run,) = db.list_runs()
        assert run.status == "interrupted" and len(db.measurements(run.id)) == 1
    assert time.perf_counter() - interrupted_at[0] < 1.5
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]


def test_cancelling_inside_write_batch_rolls_back(tmp_path: Path) -> None:
    cancel = threading.Event()

    def on_event(event) -> None:
        if isinstance(event, Progress) and "write_batch" in event.message and event.fraction > 0.05:
            cancel.set()

    count = 3 * store_class("lmdb").chunk_images  # progress comes after each chunk
    plan = experiment(tmp_path, backends=["lmdb"], counts=[count], operations=["write_batch"], keep=True)
    summary = run_experiment(plan, None, on_event, cancel)
    assert summary.status == "cancelled" and summary.measurements == []
    store = Path(summary.run_dir) / "lmdb" / str(count) / "store"
    with open_store("lmdb", store) as rolled_back:
        assert len(rolled_back) == 0


@pytest.mark.parametrize(
    "changes, error",
    [
        ({"backends": ["png", "nope"]}, UnknownBackendError),
        ({"counts": [10, 0]}, InvalidExperimentError),
        ({"counts": [-5]}, InvalidExperimentError),
        ({"operations": ["read_everything"]}, InvalidExperimentError),
        ({"caches": ["lukewarm"]}, InvalidExperimentError),
        ({"repeats": 0}, InvalidExperimentError),
        ({"backends": []}, InvalidExperimentError),
    ],
)
def test_bad_experiments_are_refused_before_anything_runs(tmp_path: Path, changes: dict, error: type) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db, pytest.raises(error):
        run_experiment(experiment(tmp_path, **changes), db)
        assert db.list_runs() == []
    assert not (tmp_path / "runs").exists()


def test_a_run_that_does_not_fit_on_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tiny:
        free = 10_000_000
        total = used = 0

    monkeypatch.setattr(estimate_module.shutil, "disk_usage", lambda path: Tiny())
    with pytest.raises(DiskSpaceError, match="only 10 MB are free"):
        run_experiment(experiment(tmp_path, counts=[100_000]))
    assert not (tmp_path / "runs").exists()


def test_the_estimate_covers_every_step_and_learns_from_history(tmp_path: Path) -> None:
    plan = experiment(tmp_path, counts=[10, 1000])
    first = estimate_experiment(plan)
    assert first.fits and first.seconds > 0 and first.disk_bytes > 1000 * 3072 and first.free_bytes > 0
    assert len(first.step_seconds) == len(steps(plan)) and "MB of disk" in first.message
    with ResultsDB(tmp_path / "r.sqlite") as db:
        run_experiment(experiment(tmp_path, counts=[1000], backends=["png"], operations=["write_batch"]), db)
        refined = estimate_experiment(plan, db)
    assert refined.seconds != first.seconds


def test_a_run_that_does_not_fit_in_memory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Little:
        available = 200_000_000

    monkeypatch.setattr(estimate_module.psutil, "virtual_memory", lambda: Little())
    plan = experiment(tmp_path, counts=[10, 1_000_000])
    estimate = estimate_experiment(plan)
    assert not estimate.fits and estimate.disk_fits and not estimate.memory_fits
    with pytest.raises(InvalidExperimentError, match="MB of memory"):
        run_experiment(plan)
    assert not (tmp_path / "runs").exists()


def test_cycled_images_are_the_images_take_makes() -> None:
    source = np.random.default_rng(3).integers(0, 256, (7, 4, 5, 3), dtype=np.uint8)
    labels = np.arange(7)
    materialised, _ = datasets.take(source, labels, 9000)
    cycled = CycledImages(source, 9000)
    assert len(cycled) == 9000 and cycled.shape == materialised.shape and cycled.nbytes == materialised.nbytes
    for index in (0, 6, 7, 8999, -1, -9000):
        np.testing.assert_array_equal(cycled[index], materialised[index])
    for start, stop in ((0, 7), (5, 4100), (6, 9000), (4000, 8999), (3, 3)):
        np.testing.assert_array_equal(cycled[start:stop], materialised[start:stop])
    ids = np.array([8999, 0, 13, 4096, 13])
    np.testing.assert_array_equal(cycled[ids], materialised[ids])
    np.testing.assert_array_equal(cycled[10:40:3], materialised[10:40:3])
    assert np.shares_memory(cycled[5:4100], cycled[5])  # a range within the overlap is a view
    with pytest.raises(IndexError):
        cycled[9000]


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream from 1 MB of pixels, in read slices of 1,000 images."""
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", 2**20)
    monkeypatch.setattr(streaming, "READ_BUFFER_IMAGES", 1000)


def test_a_streamed_count_is_written_read_and_verified_in_slices(tmp_path: Path, streamed) -> None:
    plan = experiment(tmp_path, backends=["lmdb", "hdf5"], counts=[6000], operations=["write_batch", "read_all"])
    summary = run_experiment(plan)
    assert summary.status == "finished", summary.error
    for m in summary.measurements:
        assert m.verified and m.error is None, (m.backend, m.operation, m.error)
        assert m.pixel_bytes == 6000 * 3072
    with open_store("hdf5", tmp_path / "check", "w") as store:  # the cycled source writes like the array
        source = datasets.load_source("sample")
        store.write_batch(CycledImages(source.images, 6000), np.zeros(6000, np.int64))
        np.testing.assert_array_equal(store.read_batch([5084, 5085, 5999])[0], source.images[[5084, 0, 914]])


def test_a_wrong_image_in_a_streamed_read_fails_verification(tmp_path: Path, streamed) -> None:
    plan = experiment(tmp_path, backends=["hdf5"], counts=[6000], operations=["write_batch", "read_all"])

    def corrupt(event) -> None:
        if isinstance(event, PreviewReady):
            store = Path(plan.work_dir) / event.run_id / "hdf5" / "6000" / "store"
            with h5py.File(store / "images.h5", "r+") as file:
                file["images"][5100] = 255 - file["images"][5100]

    summary = run_experiment(plan, None, corrupt)
    write, read_all = summary.measurements
    assert summary.status == "failed"
    assert not read_all.verified and "image 5100" in read_all.error


def test_memory_backed_before_a_write_leaves_no_file_and_no_resident_memory(tmp_path: Path) -> None:
    script = (
        "import resource, sys; from pathlib import Path; from storage.bench.operations.write import back_memory_for_write\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "back_memory_for_write(256 * 2**20, Path(sys.argv[1]))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) * 1024 < 32 * 2**20  # the 282 MB went through the page cache, not this process
    assert list(tmp_path.iterdir()) == []


def test_a_backend_that_cannot_store_the_source_is_refused_before_anything_runs(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for index, size in enumerate([(8, 8), (12, 6), (8, 8)]):
        path = folder / ("a" if index % 2 else "b") / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), index, np.uint8)).save(path)
    plan = experiment(tmp_path, backends=["png", "zarr"], counts=[3], source=str(folder))
    with ResultsDB(tmp_path / "r.sqlite") as db:
        with pytest.raises(storage.ImageShapeError, match="2 shapes.*zarr backend stores one image shape"):
            run_experiment(plan, db)
        assert db.list_runs() == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))
