"""Following a run without disturbing it: a page and a real run take turns through the results database.

A real engine run (png, lmdb, hdf5 on a few images) records its live state with
:class:`~storage.bench.live.LiveRecorder` while a page, a thread here with the Run page's
own :class:`~dashboard.watching.RunWatch`, "draws" each turn it is given (it notes when it
drew and what). Then: no drawing overlapped a timed call, every measurement was drawn
before the next timed call began, and every measurement says how busy the machine was.
Also the load meter against a real busy process, and the summary above the charts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from dashboard import summary, watching
from storage.bench import Experiment, Measurement, ResultsDB, run_experiment
from storage.bench.live import LiveRecorder
from storage.bench.machine_load import LoadMeter, describe_load, read_machine


class Page:
    """A page following ``run_id``: each turn it reads the run's measurements as the Run page does, and notes it."""

    def __init__(self, db: ResultsDB, run_id: str) -> None:
        self.watch = watching.RunWatch(db, run_id, watching.new_watcher_id(), heavy_settle=0.02)  # nothing to paint
        self.db, self.run_id = db, run_id
        self.draws: list[tuple[float, float, int]] = []  # (began, ended, measurements drawn), time.time()
        self.stop = threading.Event()

    def follow(self) -> None:
        while not self.stop.is_set():
            state = self.watch.wait_for_turn(max_wait=watching.FOLLOW_WAIT, redraw_every=0.2)  # as the Run page waits
            began = time.time()
            drawn = len(self.db.measurements(self.run_id))
            time.sleep(0.02)  # building and sending the charts
            self.draws.append((began, time.time(), drawn))
            self.watch.drawn(state)
            if state is None or state.status != "running":
                return


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("watched")
    plan = Experiment(
        backends=["lmdb", "hdf5"],
        counts=[1, 20],
        repeats=2,
        operations=["write_batch", "read_all", "read_random"],
        source="sample",
        work_dir=str(folder / "runs"),
        preview_ids=2,
    )
    with ResultsDB(folder / "results.sqlite") as db:
        run_id = "20260101-000000-abcdef"
        db.reserve_run(run_id, plan.to_dict(), {"spec": "sample"}, pid=os.getpid())
        page = Page(ResultsDB(folder / "results.sqlite"), run_id)
        page.watch.wait_for_turn(max_wait=0.1)  # the page is there before the run starts
        page.watch.drawn(None)
        follower = threading.Thread(target=page.follow, daemon=True)
        follower.start()
        cancel = threading.Event()
        with LiveRecorder(db, run_id, cancel) as recorder:
            result = run_experiment(plan, db, recorder.on_event, cancel, run_id=run_id)
        follower.join(10)
        page.stop.set()
        yield (
            db,
            result,
            page,
            db.timed_sections(run_id, held=False),
            db.measurement_times(run_id),
            recorder.waited_seconds,
        )


def test_a_page_never_draws_while_a_call_is_timed(watched_run) -> None:
    db, result, page, sections, _, _ = watched_run
    assert result.status == "finished" and sections and page.draws
    overlaps = [
        (draw, section)
        for draw in page.draws
        for section in sections
        if draw[0] < section[1] and section[0] < draw[1]  # the two intervals meet
    ]
    assert overlaps == []


def test_every_measurement_is_drawn_before_the_next_timed_call(watched_run) -> None:
    _, result, page, sections, recorded, waited = watched_run
    assert len(recorded) == len(result.measurements)
    for number, stored in enumerate(recorded, start=1):
        later = [start for start, _ in sections if start > stored]
        if not later:
            continue
        drawn_by = [ended for _, ended, drawn in page.draws if drawn >= number]
        assert drawn_by and min(drawn_by) <= later[0], (number, stored, later[0])
    assert 0 < waited < 30  # the run waited for the page, outside its timers


def test_every_measurement_records_the_machine_load(watched_run) -> None:
    _, result, _, _, _, _ = watched_run
    for m in result.measurements:
        load = m.machine_load
        assert load is not None and load["cores"] >= 1 and load["timed_seconds"] > 0, (m.backend, m.operation)
        assert load["other_cpu_seconds"] >= 0 and load["disturbed"] in (True, False, None)


BURN = "import time\nwhile time.process_time() < 0.25: pass"  # a process that takes 0.25 s of CPU, however busy


def test_the_load_meter_counts_its_own_children_as_its_own_and_the_rest_as_others() -> None:
    before = read_machine()
    subprocess.run([sys.executable, "-c", BURN], check=True)  # a child of the run (as a PNG encoder pool is)
    after = read_machine()
    own = after.own_cpu - before.own_cpu
    assert own >= 0.24, own  # the child's CPU time is the run's own, not "other processes"
    assert after.machine_cpu - before.machine_cpu >= own - 0.05  # the machine counts everything (10 ms ticks)


def test_a_measurement_is_disturbed_when_others_take_a_fifth_of_the_machine() -> None:
    quiet = describe_load(timed_seconds=2.0, other_cpu_seconds=0.1, cores=2, load_average=1.2)
    busy = describe_load(timed_seconds=2.0, other_cpu_seconds=1.0, cores=2, load_average=3.5)
    short = describe_load(timed_seconds=0.01, other_cpu_seconds=0.01, cores=2, load_average=3.5)
    assert (quiet["disturbed"], busy["disturbed"], short["disturbed"]) == (False, True, None)
    assert busy["other_cores"] == 0.5 and busy["load_average"] == 3.5
    meter = LoadMeter()
    meter.start()
    meter.stop(counted=False)  # a warm-up pass: not the measurement's
    assert meter.take() is None


def measurement(backend: str, operation: str, seconds: float, count: int = 1000, **fields) -> Measurement:
    values = dict(run_id="r", backend=backend, count=count, operation=operation, cache="warm", repeats=3)
    values.update(
        seconds_median=seconds, seconds_min=seconds * 0.95, seconds_max=seconds * 1.05, images=count, verified=True
    )
    values.update(fields)
    m = Measurement(**values)
    m.seconds_per_image, m.images_per_second = seconds / count, count / seconds
    return m


def test_the_summary_names_the_winner_and_runner_up_at_the_largest_count() -> None:
    rows = [
        measurement("png", "write_batch", 1.6, allocated_bytes=4_100_000),
        measurement("lmdb", "write_batch", 0.075, allocated_bytes=3_300_000),
        measurement("hdf5", "write_batch", 0.038, allocated_bytes=3_100_000),
        measurement("png", "read_all", 0.38),
        measurement("hdf5", "read_all", 0.012),
        measurement("lmdb", "read_random", 0.034),
        measurement("hdf5", "read_random", 0.060),
        measurement("lmdb", "read_all", 0.0001, count=10),  # a smaller count: not in the summary
    ]
    count, found = summary.findings(rows)
    assert count == 1000
    by_question = {f.question: f for f in found}
    assert (by_question["Fastest to write"].winner, by_question["Fastest to write"].runner_up) == ("HDF5", "LMDB")
    assert by_question["Fastest to read all"].winner == "HDF5" and by_question["Fastest to read all"].runner_up == (
        "PNG files + CSV"
    )
    assert (
        by_question["Fastest random read"].winner == "LMDB" and "per image" in by_question["Fastest random read"].figure
    )
    assert by_question["Smallest on disk"].winner == "HDF5" and by_question["Smallest on disk"].runner_up == "LMDB"
    assert "runner-up LMDB" in by_question["Fastest to write"].sentence()


def test_cautions_name_disturbed_measurements_and_wide_spreads() -> None:
    steady = measurement("lmdb", "write_batch", 0.1, machine_load={"disturbed": False, "load_average": 1.0})
    disturbed = measurement("png", "read_all", 0.4, machine_load={"disturbed": True, "load_average": 7.5})
    shaky = measurement("hdf5", "write_batch", 0.05, seconds_min=0.02, seconds_max=0.09)
    assert summary.cautions([steady]) == []
    lines = summary.cautions([steady, disturbed, shaky])
    assert len(lines) == 2
    assert "1 of 3 measurements were disturbed" in lines[0] and "7.5" in lines[0] and "PNG files + CSV" in lines[0]
    assert "HDF5" in lines[1] and "±70%" in lines[1]


def test_cautions_say_a_loader_above_its_in_memory_ceiling_is_noise() -> None:
    below = measurement("hdf5", "loader", 0.2, count=10_000, workers=2, fraction_of_ceiling=0.93)
    above = measurement("lmdb", "loader", 0.15, count=10_000, workers=2, fraction_of_ceiling=1.24)
    assert summary.cautions([below]) == []
    (line,) = summary.cautions([below, above])
    assert line.startswith("1 training-loader measurement came out above the in-memory ceiling: ")
    assert "LMDB training loader at 10,000 with 2 workers, 1.24x the ceiling" in line and "HDF5" not in line
    assert "noise between repeats" in line and "More repeats" in line
