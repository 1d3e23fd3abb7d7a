"""The child process that runs one benchmark for the dashboard: ``python -m dashboard.worker REQUEST``.

``REQUEST`` is JSON: ``{"experiment": Experiment.to_dict(), "db_path": "..."}``. The
engine's events are written to the original standard output as a stream of pickles
(standard output itself is pointed at standard error, so a stray ``print`` cannot garble
the stream), followed by ``{"kind": "done", "status": ..., "error": ..., ...}``.
``SIGUSR1`` (sent by "Stop") sets the engine's cancel event. Sending an event costs the
engine nothing it measures: events are sent outside its timers, and the time a progress
event takes inside a long operation is subtracted by the engine.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import warnings
from typing import Any, BinaryIO


def _send(stream: BinaryIO, message: Any) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def main(argv: list[str]) -> int:
    events = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    cancel = threading.Event()
    signal.signal(signal.SIGUSR1, lambda signum, frame: cancel.set())

    from storage.bench import Experiment, ResultsDB, run_experiment
    from storage.datasets import SampleDataWarning
    from storage.errors import StorageError

    warnings.simplefilter("ignore", SampleDataWarning)  # the page says which source is used
    done: dict[str, Any] = {"kind": "done", "status": "error", "error": None, "source_description": ""}
    try:
        request = json.loads(argv[1])
        experiment = Experiment.from_dict(request["experiment"])
        with ResultsDB(request["db_path"]) as db:
            summary = run_experiment(experiment, db, lambda event: _send(events, event), cancel)
        done.update(status=summary.status, error=summary.error, source_description=summary.source_description)
    except StorageError as error:  # bad parameters, missing data, no disk space: one clear sentence
        done["error"] = str(error)
    except (IndexError, KeyError, ValueError) as error:
        done["error"] = f"the benchmark request could not be read ({type(error).__name__}: {error})"
    except Exception as error:
        import traceback

        traceback.print_exc()
        done["error"] = f"{type(error).__name__}: {error}"
    try:
        _send(events, done)
    except (BrokenPipeError, OSError):
        return 1  # the dashboard has gone away; the results database has the run
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
