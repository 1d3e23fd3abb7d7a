"""Run parameters from plain values: one parser, which the command line and the Run page both use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import state  # noqa: E402
from storage.bench.experiment import (  # noqa: E402
    RunParameterError,
    experiment_from_params,
    parse_parameter,
    validate,
)
from storage.cli.common import int_argument, run_parameter  # noqa: E402


def test_plain_values_become_a_normalised_experiment() -> None:
    experiment = experiment_from_params(
        backends="lmdb,png,lmdb", counts=["100", 10, "1_000"], operations="read_all,write_batch", repeats="2"
    )
    assert experiment.backends == ["lmdb", "png"] and experiment.counts == [10, 100, 1000]
    assert experiment.operations == ["write_batch", "read_all"] and experiment.repeats == 2
    assert validate(experiment) == experiment
    assert parse_parameter("counts", "20,5,20") == [20, 5, 20]  # one parameter keeps the order given


@pytest.mark.parametrize(
    "params, field, words",
    [
        ({"counts": "5,0"}, "counts", "image count '0' is not a positive integer"),
        ({"counts": []}, "counts", "choose at least one image count"),
        ({"backends": ["png", "floppy"]}, "backends", "unknown backend 'floppy'; registered backends are: png"),
        ({"operations": ["read_everything"]}, "operations", "unknown operation 'read_everything'; operations are"),
        ({"caches": ["lukewarm"]}, "caches", "cache states are: warm, cold"),
        ({"repeats": 0}, "repeats", "repeats 0 is not a positive integer"),
        ({"seed": "-1"}, "seed", "seed '-1' is not a non-negative integer"),
        ({"operations": ["loader"], "workers": [0, "x"]}, "workers", "worker count 'x' is not a whole number of 0"),
        ({"operations": ["loader"], "batch_size": True}, "batch_size", "batch size True is not a positive integer"),
    ],
)
def test_a_refused_value_names_its_field(params: dict, field: str, words: str) -> None:
    with pytest.raises(RunParameterError, match=words) as refused:
        experiment_from_params(**params)
    assert refused.value.field == field


def test_the_command_line_refuses_in_the_parsers_words() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="^image count 'ten' is not a positive integer$"):
        run_parameter("counts")("10,ten")
    with pytest.raises(argparse.ArgumentTypeError, match="^give a comma-separated list$"):
        run_parameter("operations")(" , ")
    assert run_parameter("workers")("2,0") == [2, 0]
    with pytest.raises(argparse.ArgumentTypeError, match="^batch size '0' is not a positive whole number of images$"):
        int_argument(1, "batch size", "a positive whole number of images")("0")
    with pytest.raises(argparse.ArgumentTypeError, match="^'-1' is not a non-negative integer$"):
        int_argument(0)("-1")


def test_the_run_page_builds_its_run_with_the_same_parser() -> None:
    controls = state.RunControls(formats=["lmdb"], operations=["loader", "read_all"], workers=[2, 0])
    experiment = state.to_experiment(controls, "runs")
    assert experiment.operations == ["read_all", "loader"] and experiment.workers == [0, 2]
    with pytest.raises(RunParameterError) as refused:
        state.to_experiment(state.RunControls(formats=["lmdb"], operations=["loader"], workers=[]), "runs")
    assert state.CONTROL_LABELS[refused.value.field] == "DataLoader workers"
