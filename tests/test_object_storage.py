"""Stores in object storage, against the session's real S3 server (SeaweedFS): each format read by its own
library, stores visible only when complete, faults retried then named, the engine's measurements, no secrets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import storage
from dashboard.share import settings_lines
from storage.bench import Experiment, ResultsDB, run_experiment
from storage.datasets import load_source
from storage.errors import StoreNotFoundError
from storage.s3 import ObjectStorageError, S3Location
from storage.s3.remote import read_method
from storage.s3.transfer import delete_prefix, list_objects, upload_store
from storage.testing.s3_proxy import FaultyProxy

REPO_ROOT = Path(__file__).resolve().parents[1]
COUNT = 12


@pytest.fixture(scope="module")
def images():
    source = load_source("sample")
    return np.asarray(source.images[:COUNT]), np.asarray(source.labels[:COUNT])


def write(backend: str, url: str, images, **options) -> None:
    with storage.open_store(backend, url, "w", **options) as store:
        store.write_batch(*images)


@pytest.mark.parametrize("backend", ["webdataset", "parquet", "lance", "zarr", "lmdb"])
def test_a_store_written_to_a_bucket_reads_back_by_its_own_library(s3, images, backend: str) -> None:
    url = f"{s3.url}/{backend}"
    write(backend, url, images)
    with storage.open_store(url) as store:  # the backend from the uploaded manifest
        assert store.info.name == backend and len(store) == COUNT
        batch, labels = store.read_batch(np.arange(COUNT))
        image, label = store.read_one(5)
    assert all(np.array_equal(a, b) for a, b in zip(batch, images[0], strict=True))
    assert np.array_equal(labels, images[1]) and np.array_equal(image, images[0][5]) and label == images[1][5]
    assert store.read_method == read_method(backend)
    assert read_method(backend).startswith("downloaded") == (backend == "lmdb")


def settled_gets(meter) -> int:
    """GETs since ``meter.start()``, once the server's counters have stopped moving (they are
    updated a moment after the answer: one CI run counted 11 of an epoch's 12 row groups)."""
    import time

    counted = meter.stop().requests_by_type.get("GET", 0)
    for _ in range(20):
        time.sleep(0.25)
        again = meter.stop().requests_by_type.get("GET", 0)
        if again == counted:
            return counted
        counted = again
    return counted


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shuffled_parquet_epoch_fetches_each_row_group_once_not_once_per_image(s3, tmp_path, workers: int) -> None:
    """Parquet's epochs read whole row groups in a shuffled order through a shuffle buffer: every id once,
    in a new order each epoch, with requests that grow with the row groups, not the images."""
    from storage.s3.traffic import TrafficMeter
    from storage.s3_loaders import make_s3_loader

    source = load_source("sample")
    count, rows = 600, 50
    images, labels = np.asarray(source.images[:count]), np.asarray(source.labels[:count])
    url = f"{s3.url}/rowgroups-{workers}"
    write("parquet", url, (images, labels), row_group_rows=rows)
    meter = TrafficMeter(s3.metrics_url, S3Location.parse(url).bucket)
    with storage.open_store(url) as store:
        loader = make_s3_loader(store, batch_size=32, num_workers=workers, seed=3)
        orders, requests = [], []
        for _ in range(2):
            meter.start()
            order = []
            for batch_images, batch_labels, ids in loader:
                ids = ids.numpy()
                assert np.array_equal(batch_images.numpy(), images[ids]) and np.array_equal(batch_labels, labels[ids])
                order.extend(ids.tolist())
            requests.append(settled_gets(meter))
            orders.append(order)
    for order in orders:
        assert sorted(order) == list(range(count))  # every id exactly once
        assert order != sorted(order)
    assert orders[0] != orders[1]  # a new order each epoch
    meter.start()
    with storage.open_store(url) as store:
        pass
    opening = settled_gets(meter)  # the manifest, the footer, the labels and shapes
    groups = count // rows
    # One image read at a time fetched a row group each: ``count`` GETs. Whole row groups: one each,
    # and in the first epoch each worker opens the store once.
    assert groups <= requests[0] <= groups + workers * opening + 1, (requests, opening)
    assert groups <= requests[1] <= groups + 1, requests


def test_a_write_that_fails_leaves_nothing_that_opens(s3, images) -> None:
    url = f"{s3.url}/broken"
    with pytest.raises(RuntimeError, match="cut off"):
        with storage.open_store("webdataset", url, "w") as store:
            store.write_batch(*images)
            raise RuntimeError("cut off")
    with pytest.raises(StoreNotFoundError):
        storage.open_store(url)
    assert list_objects(S3Location.parse(url)) == {}
    assert delete_prefix(S3Location.parse("s3://image-lab-no-such-bucket/x")) == 0  # a first upload's clean-up


def test_an_upload_cut_off_by_a_stopped_server_is_named_and_leaves_no_store(s3, images, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IMAGE_STORAGE_LAB_S3_ATTEMPTS", "2")
    folder = tmp_path / "store"
    with storage.open_store("png", folder, "w") as store:  # a file per image
        store.write_batch(*images)
    assert len([p for p in folder.rglob("*") if p.is_file()]) > 3
    with FaultyProxy(s3.endpoint_url) as proxy:
        location = S3Location.parse(f"{s3.url}/cut", proxy.endpoint_url)
        proxy.stop_after(4)
        with pytest.raises(ObjectStorageError, match=rf"PUT {location.url}/\S+ failed after 2 attempts"):
            upload_store(location, folder)
    with pytest.raises(StoreNotFoundError):
        storage.open_store(f"{s3.url}/cut")  # the manifest goes last: it never arrived


@pytest.fixture
def webdataset_url(s3, images, monkeypatch):
    monkeypatch.setenv("IMAGE_STORAGE_LAB_S3_ATTEMPTS", "3")
    url = f"{s3.url}/wds"
    write("webdataset", url, images)
    return url


def test_503_answers_are_retried_and_then_named_with_the_key(s3, images, webdataset_url) -> None:
    with FaultyProxy(s3.endpoint_url) as proxy:
        with storage.open_store(webdataset_url, endpoint_url=proxy.endpoint_url) as store:
            proxy.fail_next(2, "503")
            image, _ = store.read_one(3)  # the third try gets through
            assert np.array_equal(image, images[0][3]) and proxy.faults == 2
            proxy.set_mode("503")
            with pytest.raises(
                ObjectStorageError,
                match=r"GET \(bytes \d+-\d+\) s3://\S+/wds/\S+\.tar failed after 3 attempts.*SlowDown",
            ):
                store.read_one(4)


def test_a_server_that_does_not_answer_times_out_and_is_named(s3, webdataset_url, monkeypatch) -> None:
    monkeypatch.setenv("IMAGE_STORAGE_LAB_S3_TIMEOUT", "0.3")
    monkeypatch.setenv("IMAGE_STORAGE_LAB_S3_ATTEMPTS", "2")
    with FaultyProxy(s3.endpoint_url) as proxy:
        with storage.open_store(webdataset_url, endpoint_url=proxy.endpoint_url) as store:
            proxy.set_mode("hang")
            with pytest.raises(
                ObjectStorageError,
                match=r"GET \(bytes \d+-\d+\) s3://\S+/wds/\S+\.tar failed after 2 attempts.*[Tt]imeout",
            ):
                store.read_one(1)


def s3_experiment(tmp_path: Path, url: str, **changes) -> Experiment:
    values = dict(
        backends=["parquet", "lmdb"],
        counts=[COUNT],
        operations=["upload", "first_epoch", "later_epoch", "remote_random"],
        workers=[0],
        batch_size=4,
        repeats=1,
        source="sample",
        work_dir=str(tmp_path / "runs"),
        preview_ids=0,
        location=f"{url}/runs",
        network_rtt_ms=20.0,
        network_mbit=100.0,
    )
    values.update(changes)
    return Experiment(**values)


def test_the_engine_measures_upload_and_epochs_with_requests_bytes_and_a_projection(
    s3, tmp_path, capfd, caplog
) -> None:
    plan = s3_experiment(tmp_path, s3.url, operations=["upload", "first_epoch", "later_epoch"])
    with ResultsDB(tmp_path / "results.sqlite") as db:
        summary = run_experiment(plan, db)
        stored = db.measurements(summary.run_id)
    assert summary.status == "finished", summary.error
    assert [m.to_dict() for m in stored] == [m.to_dict() for m in summary.measurements]
    found = {(m.backend, m.operation): m for m in summary.measurements}
    assert sorted(found) == sorted((b, op) for b in plan.backends for op in plan.operations)
    for m in summary.measurements:
        assert m.verified and m.error is None, (m.backend, m.operation, m.error)
        assert m.location.startswith(f"{s3.url}/runs/{summary.run_id}/{m.backend}/") and m.endpoint == s3.endpoint_url
        assert m.requests is not None and m.transferred_bytes is not None
        projection = m.projection
        assert projection["rtt_ms"] == 20.0 and projection["bandwidth_mbit"] == 100.0
        expected = m.seconds_median + m.requests * 0.020 / projection["concurrency"] + m.transferred_bytes * 8 / 1e8
        assert m.projected_seconds == pytest.approx(expected)
    size = sum(images.nbytes for images in load_source("sample").images[:COUNT])
    for backend in plan.backends:
        upload, first = found[backend, "upload"], found[backend, "first_epoch"]
        assert upload.transferred_bytes >= size and upload.requests_by_type.get("PUT", 0) >= 1
        assert first.requests > 0 and first.transferred_bytes >= size  # nothing cached: every image comes over
    assert found["lmdb", "later_epoch"].requests == 0  # downloaded once, then read locally
    assert found["lmdb", "first_epoch"].read_method.startswith("downloaded")
    assert list_objects(S3Location.parse(f"{s3.url}/runs")) == {}  # the run's objects go with it
    with ResultsDB(tmp_path / "results.sqlite") as db:
        (settings,) = settings_lines([db.get_run(summary.run_id)])  # the Share picture's words
    assert f"stores at {s3.url}/runs, projected to 20 ms RTT, 100 Mbit/s" in settings
    secrets = (s3.secret, s3.access_key)
    written = (tmp_path / "results.sqlite").read_bytes() + capfd.readouterr().out.encode() + caplog.text.encode()
    written += settings.encode()
    assert not any(secret.encode() in written for secret in secrets)


@pytest.mark.parametrize("backend", ["webdataset", "litdata", "mds", "lance", "parquet", "zarr", "hdf5", "npy"])
def test_every_format_s_own_loader_reads_a_one_shape_store_from_the_bucket(s3, tmp_path, backend: str) -> None:
    """CIFAR's one shape is the case a format may store its own way (Lance: one fixed-size column),
    so each remote loader is run on it: both epochs verified image by image against the source."""
    plan = s3_experiment(tmp_path, s3.url, backends=[backend], operations=["upload", "first_epoch", "later_epoch"])
    with ResultsDB(tmp_path / "results.sqlite") as db:
        summary = run_experiment(plan, db)
    assert summary.status == "finished", summary.error
    assert [m.operation for m in summary.measurements] == plan.operations
    for m in summary.measurements:
        assert m.error is None and m.verified, (m.operation, m.error)
    first = summary.measurements[1]
    assert first.requests > 0 and first.transferred_bytes > 0  # nothing cached: the images come over


def test_cli_convert_and_bench_at_a_location_keep_credentials_out_of_output_results_and_exports(s3, tmp_path) -> None:
    database, export = tmp_path / "r.sqlite", tmp_path / "export.json"
    cli = [sys.executable, "-m", "storage"]
    converted = subprocess.run(
        [*cli, "convert", "sample", "--to", "parquet", f"{s3.url}/cifar", "--limit", "20", "--no-progress"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    assert "read back" in converted.stdout and "they match the source" in converted.stdout
    with storage.open_store(f"{s3.url}/cifar") as store:
        assert len(store) == 20 and store.info.name == "parquet"
    benched = subprocess.run(
        [*cli, "bench", "--backends", "npy", "--counts", "8", "--location", f"{s3.url}/runs", "--ops",
         "upload,remote_random", "--repeats", "1", "--db", str(database), "--json", str(tmp_path / "run.json"),
         "--no-progress", "--network-rtt-ms", "50"],
        capture_output=True, text=True, timeout=180, cwd=REPO_ROOT,
    )  # fmt: skip
    assert benched.returncode == 0, benched.stderr
    assert "remote_random" in benched.stdout and "projected to 50 ms RTT" in benched.stdout
    with ResultsDB(database) as db:
        export.write_text(db.export_json(db.list_runs()[0].id))  # what python -m storage export writes
    measurements = json.loads(export.read_text())
    assert {m["operation"] for m in measurements} == {"upload", "remote_random"}
    assert all(m["requests"] > 0 and m["endpoint"] == s3.endpoint_url for m in measurements)
    everything = [converted.stdout, converted.stderr, benched.stdout, benched.stderr, export.read_text()]
    everything += [(tmp_path / "run.json").read_text(), database.read_bytes().decode("latin-1")]
    assert not any(secret in text for text in everything for secret in (s3.secret, s3.access_key))


def test_a_server_that_stops_mid_read_fails_the_measurement_naming_the_key(s3, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IMAGE_STORAGE_LAB_S3_ATTEMPTS", "2")
    with FaultyProxy(s3.endpoint_url) as proxy:
        plan = s3_experiment(
            tmp_path, s3.url, backends=["webdataset"], operations=["remote_random"], endpoint_url=proxy.endpoint_url
        )  # one ranged GET per image
        proxy.stop_after(28)  # the upload and a warm-up pass (about 20 requests), then a few of the timed reads
        with ResultsDB(tmp_path / "results.sqlite") as db:
            summary = run_experiment(plan, db)
    (measurement,) = summary.measurements
    assert summary.status == "failed" and proxy.requests > 28  # a run with a failed measurement
    assert not measurement.verified and measurement.samples == []
    assert re.search(
        rf"ObjectStorageError: GET .*{s3.url}/runs/\S+/webdataset/12/\S+ failed after 2", measurement.error
    )
    assert s3.secret not in measurement.error


def test_the_run_page_sends_where_the_data_lives_to_the_engine(tmp_path) -> None:
    from dashboard import state
    from storage.bench.experiment import RunParameterError

    controls = state.RunControls(formats=["lmdb"], operations=["upload", "first_epoch"], location="s3://image-lab/x")
    shown = state.controls_from_widgets(state.run_widget_values(controls))
    assert shown.location == "s3://image-lab/x"
    assert state.to_experiment(shown, str(tmp_path)).location == "s3://image-lab/x"
    assert state.to_experiment(state.RunControls(), str(tmp_path)).location is None  # a local folder
    shown.location = "s3://Not_A_Bucket/x"
    with pytest.raises(RunParameterError) as refused:
        state.to_experiment(shown, str(tmp_path))
    assert state.CONTROL_LABELS[refused.value.field] == "Where the data lives" and "bucket" in str(refused.value)
