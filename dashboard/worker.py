"""The process that runs one benchmark for the dashboard: ``python -m dashboard.worker REQUEST``.

``REQUEST`` is JSON: ``{"experiment": Experiment.to_dict(), "db_path": "...", "run_id": "..."}``.
The dashboard has reserved ``run_id`` in the results database for this process (see
:func:`dashboard.runner.launch`) and writes one line to its standard input once it has;
the process waits for that line, then runs the engine. Everything the pages show goes
through the results database: the measurements (the engine), the progress, the previews
and the stop requests (:class:`storage.bench.live.LiveRecorder`). ``SIGUSR1`` stops the run
too. Standard output is pointed at standard error so that nothing is written elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import warnings


def main(argv: list[str]) -> int:
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    cancel = threading.Event()
    signal.signal(signal.SIGUSR1, lambda signum, frame: cancel.set())

    from storage.bench import Experiment, ResultsDB, run_experiment
    from storage.bench.live import LiveRecorder
    from storage.datasets import SampleDataWarning
    from storage.errors import StorageError

    warnings.simplefilter("ignore", SampleDataWarning)  # the page says which source is used
    try:
        request = json.loads(argv[1])
        experiment = Experiment.from_dict(request["experiment"])
        db_path, run_id = request["db_path"], request["run_id"]
    except (IndexError, KeyError, ValueError, TypeError) as error:
        print(f"the benchmark request could not be read ({type(error).__name__}: {error})", file=sys.stderr)
        return 2
    sys.stdin.readline()  # the run is reserved in the database: go
    with ResultsDB(db_path) as db:
        with LiveRecorder(db, run_id, cancel) as recorder:
            try:
                summary = run_experiment(experiment, db, recorder.on_event, cancel, run_id=run_id)
            except StorageError as error:  # bad parameters, missing data, no disk space: one clear sentence
                db.finish_run(run_id, "failed", str(error))
                return 1
            except Exception as error:
                import traceback

                traceback.print_exc()
                db.finish_run(run_id, "failed", f"{type(error).__name__}: {error}")
                return 1
    return 0 if summary.status in ("finished", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
