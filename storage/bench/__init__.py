"""Benchmarks of the storage backends: an engine, a results history and reports.

    from storage.bench import Experiment, ResultsDB, run_experiment
    with ResultsDB("data/results.sqlite") as db:
        summary = run_experiment(Experiment(counts=[100, 1000], repeats=1), db)

This module only re-exports; see ``engine`` (the run loop), ``operations`` (what each
operation times), ``run_state`` (what a run carries between measurements), ``results`` (the
SQLite history), ``pagecache`` (cold-cache eviction), ``environment`` (the machine),
``estimate`` (time and disk before a run) and ``report`` (tables).
"""

from ..verify import Verification, verify_store
from .engine import run_experiment
from .environment import capture_environment, peak_rss_bytes
from .estimate import Estimate, estimate_experiment
from .events import (
    Event,
    Measurement,
    MeasurementRecorded,
    PreviewReady,
    Progress,
    RunFinished,
    RunStarted,
    RunSummary,
)
from .experiment import CACHES, OPERATIONS, Experiment, InvalidExperimentError, validate
from .placement import new_run_id
from .results import DEFAULT_DB_PATH, ResultsDB, RunNotFoundError, RunProgress, RunRecord
from .run_state import RunCancelled

__all__ = [
    "CACHES",
    "DEFAULT_DB_PATH",
    "OPERATIONS",
    "Estimate",
    "Event",
    "Experiment",
    "InvalidExperimentError",
    "Measurement",
    "MeasurementRecorded",
    "PreviewReady",
    "Progress",
    "ResultsDB",
    "RunCancelled",
    "RunFinished",
    "RunNotFoundError",
    "RunProgress",
    "RunRecord",
    "RunStarted",
    "RunSummary",
    "Verification",
    "capture_environment",
    "estimate_experiment",
    "new_run_id",
    "peak_rss_bytes",
    "run_experiment",
    "validate",
    "verify_store",
]
