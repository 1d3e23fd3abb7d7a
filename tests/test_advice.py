"""The advice: its reasoning on fixed, stored measurements, and one small real run of ``python -m storage advise``.

The reasoning tests build real :class:`Measurement` records (as a run stores them) for made-up
formats' figures, so that each rule is checked against a case it must decide: the fastest
format over the disk budget, lossy, or without random access, is never the answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.advice import Candidate, Evidence, InvalidQuestionError, Machine, Question, advise_from, parse_size
from storage.advice.model import Points, fit_line, project_bytes, project_latency, project_linear
from storage.advice.sampling import sample_counts
from storage.bench import Measurement, ResultsDB

REPO_ROOT = Path(__file__).resolve().parent.parent
MACHINE = Machine(free_bytes=10**13, free_inodes=10**8, memory_bytes=64 * 10**9)
COUNTS = (400, 2_000, 10_000)


def _measurement(backend: str, count: int, operation: str, seconds: float, **extra) -> Measurement:
    images = min(count, 1_000) if operation == "read_random" else count
    spread = (0.95, 1.0, 1.05)
    return Measurement(
        run_id="20261202-000000-abcdef",
        backend=backend,
        count=count,
        operation=operation,
        cache="warm",
        samples=[seconds * s for s in spread],
        images=images,
        verified=True,
        workers=2 if operation == "loader" else None,
        **extra,
    )


def evidence(backend: str, *, write=1e-5, scan=1e-6, epoch=2e-5, random_read=1e-5, image_bytes=3_100, lossy=False,
             options=()) -> Evidence:  # fmt: skip
    """A format measured at three counts: seconds per image for each operation, bytes per image on disk."""
    measurements = []
    for count in COUNTS:
        disk = {"allocated_bytes": int(8192 + image_bytes * count), "files": 2}
        measurements += [
            _measurement(backend, count, "write_batch", 0.01 + write * count, psnr=40.0 if lossy else None, **disk),
            _measurement(backend, count, "read_all", 0.001 + scan * count),
            _measurement(backend, count, "read_random", random_read * min(count, 1_000)),
            _measurement(backend, count, "loader", 0.4 + epoch * count),
        ]
    return Evidence(Candidate(backend, options), measurements, runs=["20261202-000000-abcdef"])


def answer(question: Question, *formats: Evidence):
    return advise_from(question, {found.candidate: found for found in formats}, MACHINE)


def test_a_line_fitted_to_exact_costs_gives_them_back_and_projects_within_its_range():
    line = fit_line([100, 1_000, 10_000], [0.5 + 2e-5 * c for c in (100, 1_000, 10_000)])
    assert line.fixed == pytest.approx(0.5) and line.per_image == pytest.approx(2e-5)
    points = Points.gather([(c, [0.5 + 2e-5 * c * f for f in (0.9, 1.0, 1.1)]) for c in (100, 1_000, 10_000)])
    projected = project_linear(points, 1_000_000)
    assert projected.value == pytest.approx(20.5, rel=0.01) and projected.low < projected.value < projected.high
    assert projected.high == pytest.approx(0.5 + 2.2e-5 * 1_000_000, rel=0.01)  # the slowest repeats' line
    sizes = project_bytes(Points.gather([(c, [4096 + 3072 * c]) for c in (100, 1_000)]), 1_281_167)
    assert sizes.value == pytest.approx(4096 + 3072 * 1_281_167) and sizes.low < sizes.value < sizes.high
    latency = project_latency(
        Points.gather([(c, [1e-5 * (1 + 0.1 * i)]) for i, c in enumerate((10, 100, 1_000))]), 10**6
    )
    assert latency.value > 1.2e-5  # it grows with the store's size, on a log scale


def test_costs_that_fall_with_the_count_are_held_constant_not_extrapolated_below_zero():
    line = fit_line([100, 1_000], [2.0, 1.0])
    assert line.per_image == 0 and line.at(10**7) == pytest.approx(1.5)


def test_the_fastest_format_over_the_disk_budget_is_never_recommended():
    question = Question(count=1_000_000, access="shuffled", disk_budget_bytes=parse_size("3.5GB"))
    fast_and_big = evidence("npy", epoch=1e-6, image_bytes=4_000)
    slow_and_small = evidence("lmdb", epoch=5e-5, image_bytes=3_000)
    advice = answer(question, fast_and_big, slow_and_small)
    assert advice.recommended.backend == "lmdb"
    rows = {row["backend"]: row for row in advice.to_dict()["formats"]}
    assert rows["npy"]["ruled_out"].startswith("over the disk budget")
    assert rows["lmdb"]["projected_bytes"]["high"] <= 3.5e9
    assert "within your 3.5 GB" in advice.text and "npy (over the disk budget" in advice.text
    # without the budget the faster one wins: the budget, not the order, decided
    assert (
        answer(Question(count=1_000_000, access="shuffled"), fast_and_big, slow_and_small).recommended.backend == "npy"
    )


def test_formats_whose_projected_ranges_overlap_are_named_as_a_tie_and_a_clear_win_is_not():
    question = Question(count=1_000_000, access="shuffled")
    # 2 % apart, with every repeat 5 % either side: the samples cannot tell the two apart
    npy, lmdb = evidence("npy", epoch=2.00e-5, image_bytes=3_100), evidence("lmdb", epoch=2.04e-5, image_bytes=3_200)
    advice = answer(question, npy, lmdb)
    assert advice.recommended.backend == "npy"
    assert advice.to_dict()["tied_with_recommended"] == [advice.ranked[1].label]
    assert f"ties with {advice.ranked[1].label}" in advice.text and "it is the smallest on disk" in advice.text
    # three times as slow: its range is far above the winner's, so no tie is claimed
    clear = answer(question, npy, evidence("lmdb", epoch=6e-5))
    assert clear.to_dict()["tied_with_recommended"] == [] and "ties with" not in clear.text


def test_a_format_s_own_loader_order_is_left_out_of_its_epoch_projection():
    """Parquet, LitData, MDS and Lance are also measured in their own (weaker) shuffle: epochs of both orders
    pooled into one fit gave a projection of neither. The advice fits the common full shuffle only."""
    question = Question(count=1_000_000, access="shuffled")
    common = evidence("parquet", epoch=5e-5)
    both = evidence("parquet", epoch=5e-5)
    for count in COUNTS:
        both.measurements.append(_measurement("parquet", count, "loader", 0.1 + 5e-6 * count, order="own"))
    expected = answer(question, common).ranked[0].projection.epoch_s
    assert answer(question, both).ranked[0].projection.epoch_s == expected
    assert 40 < expected.value < 60  # 0.4 s + 50 µs an image at 1,000,000, not the own order's 5 µs


def test_a_lossy_format_is_never_recommended_when_lossless_is_asked():
    lossy = evidence("jpeg", epoch=1e-7, lossy=True)
    exact = evidence("hdf5", epoch=3e-5)
    assert answer(Question(count=50_000, lossless=True), lossy, exact).recommended.backend == "hdf5"
    assert answer(Question(count=50_000, lossless=False), lossy, exact).recommended.backend == "jpeg"
    kept_bytes_reencoded = evidence("lmdb", epoch=1e-7, options=(("encoding", "jpeg:90"),))
    advice = answer(Question(count=50_000, lossless=True), kept_bytes_reencoded, exact)
    assert advice.recommended.backend == "hdf5" and "lossy" in advice.rows[0].ruled_out


def test_a_format_without_random_access_is_never_recommended_for_random_lookups():
    tar = evidence("webdataset", random_read=1e-7)
    keyed = evidence("lmdb", random_read=3e-5)
    advice = answer(Question(count=200_000, access="random"), tar, keyed)
    assert advice.recommended.backend == "lmdb"
    assert "no random access" in {r.backend: r for r in advice.rows}["webdataset"].ruled_out
    assert answer(Question(count=200_000, access="sequential"), tar, keyed).recommended.backend in (
        "webdataset",
        "lmdb",
    )


def test_readable_by_other_tools_keeps_only_files_and_tars_and_too_many_files_are_named():
    advice = answer(Question(count=500_000, readable_by_others=True), evidence("lmdb", epoch=1e-7),
                    evidence("webdataset", epoch=1e-4))  # fmt: skip
    assert advice.recommended.backend == "webdataset"
    assert "own library" in {r.backend: r for r in advice.rows}["lmdb"].ruled_out
    files = evidence("png", epoch=1e-6)
    for m in files.measurements:
        m.files = m.count + 1
    advice = answer(Question(count=2_000_000), files, evidence("hdf5", epoch=1e-4))
    assert advice.recommended.backend == "hdf5" and "files" in {r.backend: r for r in advice.rows}["png"].ruled_out


def test_the_advice_for_stored_measurements_is_the_same_every_time_and_names_no_answer_when_none_fits():
    formats = [evidence("npy", epoch=2e-5), evidence("hdf5", epoch=3e-5), evidence("jpeg", epoch=1e-5, lossy=True)]
    question = Question(count=1_281_167, access="shuffled", workers=8, lossless=True, disk_budget_bytes=10**13)
    first, second = answer(question, *formats), answer(question, *reversed(formats))
    assert first.to_dict()["recommended"] == second.to_dict()["recommended"] == {"backend": "npy", "options": {}}
    assert first.to_dict()["formats"][0]["projected_epoch_s"] == second.to_dict()["formats"][2]["projected_epoch_s"]
    nothing = answer(Question(count=10**6, disk_budget_bytes=10**6), *formats)
    assert nothing.recommended is None and nothing.text.startswith("No format weighed meets")


def test_bad_questions_are_refused_saying_what_to_give():
    with pytest.raises(InvalidQuestionError, match="200GB"):
        parse_size("lots")
    assert parse_size("200GB") == 200 * 10**9 and parse_size("1.5 TiB") == int(1.5 * 2**40)
    with pytest.raises(InvalidQuestionError, match="one of: shuffled"):
        answer(Question(access="diagonal"), evidence("npy"))
    assert sample_counts(Question(count=1_281_167)) == [400, 2_000, 10_000]
    assert sample_counts(Question(count=30)) == [30]


def _advise(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storage", "advise", "--db", str(tmp_path / "r.sqlite"),
         "--work-dir", str(tmp_path / "runs"), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env={**os.environ},
    )  # fmt: skip


def test_advise_end_to_end_measures_a_small_sample_then_reuses_it(tmp_path):
    args = ("--source", "sample", "--count", "300", "--access", "random", "--backends", "npy,lmdb,webdataset",
            "--time-budget", "20s", "--disk-budget", "50GB", "--json", str(tmp_path / "advice.json"))  # fmt: skip
    first = _advise(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    advice = json.loads((tmp_path / "advice.json").read_text())
    assert advice["recommended"]["backend"] in ("npy", "lmdb")  # webdataset has no random access
    rows = {row["backend"]: row for row in advice["formats"]}
    assert set(rows) == {"npy", "lmdb", "webdataset"}
    assert "no random access" in rows["webdataset"]["ruled_out"]
    for row in rows.values():
        assert len(row["measured"]["write_batch"]["counts"]) >= 2
        for name in ("projected_bytes", "projected_convert_s", "projected_epoch_s", "projected_random_read_s"):
            assert 0 <= row[name]["low"] <= row[name]["value"] <= row[name]["high"], (row["backend"], name)
        assert row["projected_bytes"]["value"] > 3072 * 300  # at least the pixels of the images
    assert "measuring npy, lmdb, webdataset" in first.stderr
    with ResultsDB(tmp_path / "r.sqlite") as db:
        runs = [run.id for run in db.list_runs()]
    assert sorted(runs) == sorted(advice["runs"])
    second = _advise(tmp_path, *args[:-2], "--json", "-")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert "measuring" not in second.stderr and "reused earlier runs" in second.stderr
    assert again["recommended"] == advice["recommended"] and again["runs"] == advice["runs"]


def test_advise_refuses_a_bad_budget_before_measuring(tmp_path):
    result = _advise(tmp_path, "--count", "10", "--access", "shuffled", "--disk-budget", "a lot")
    assert result.returncode == 2 and "is not a size" in result.stderr
    assert not (tmp_path / "r.sqlite").exists()


def test_appending_is_decided_by_the_one_at_a_time_write_and_a_store_larger_than_memory_is_named():
    def appended(backend: str, per_image: float) -> Evidence:
        found = evidence(backend, epoch=1e-6 if backend == "npy" else 1e-4)
        found.measurements += [_measurement(backend, c, "write_one", 0.01 + per_image * c) for c in COUNTS]
        return found

    question = Question(count=30_000_000, access="append")
    advice = answer(question, appended("npy", 5e-5), appended("lmdb", 1e-5))
    assert advice.recommended.backend == "lmdb"  # slower epochs, but appending is what this access spends
    assert advice.to_dict()["deciding_figure"] == "append_s"
    assert any("larger than this machine's" in note for note in advice.recommended.warnings)  # 93 GB > 64 GB


def test_photos_of_several_sizes_are_advised_on_without_the_loader_from_their_random_reads():
    from storage.advice.sampling import one_size, operations_for
    from storage.datasets import list_image_folder, load_source

    photos, _, _ = list_image_folder(REPO_ROOT / "data" / "imagenet-sample")
    assert not one_size(photos) and one_size(load_source("sample").images[:10])
    assert "loader" not in operations_for(Question(access="shuffled"), loader=one_size(photos))
    found = evidence("lmdb", random_read=2e-4, options=(("encoding", "source"),))
    found.measurements = [m for m in found.measurements if m.operation != "loader"]
    advice = answer(Question(count=1_000_000, access="shuffled"), found)
    row = advice.to_dict()["formats"][0]
    assert row["epoch_method"] == "read_random"
    assert row["projected_epoch_s"]["value"] == pytest.approx(row["projected_random_read_s"]["value"] * 1_000_000)
    assert advice.recommended.backend == "lmdb" and "the files' own bytes kept" in advice.text
