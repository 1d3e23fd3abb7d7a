"""Answer a :class:`Question`: measure what is missing on a sample, project, rule out, recommend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import registry
from ..bench.environment import describe
from .candidates import Candidate, default_backends
from .projection import project
from .question import Question, check_question
from .recommend import Advice, Weighed, rank, recommendation_text
from .rules import Machine, ruled_out, warnings_for
from .sampling import (
    Evidence,
    covered,
    describe_source,
    encoding_for,
    experiment_for,
    measure,
    one_size,
    operations_for,
    refusal,
    sample_counts,
    stored_evidence,
    this_machine,
)


def candidates_for(question: Question, photos: bool, work_dir: str) -> list[Candidate]:
    """The formats weighed, each with the options its store is opened with (as a run would open it)."""
    names = list(question.backends) or default_backends(photos)
    for name in names:
        registry.backend_info(name)  # an unknown name is refused with the list of known ones
    experiment = experiment_for(question, names, sample_counts(question)[-1], photos, work_dir)
    return [Candidate(name, tuple(sorted(experiment.store_options(name).items()))) for name in names]


def weigh(question: Question, evidence: dict[Candidate, Evidence], machine: Machine) -> list[Weighed]:
    """Every candidate projected and put to the rules: deterministic for the same evidence and machine."""
    operations = operations_for(question)
    rows = []
    for found in evidence.values():
        projection = project(found, question, operations)
        reason = ruled_out(question, projection, machine)
        rows.append(Weighed(projection, reason, warnings_for(question, projection, machine)))
    return rows


def advise_from(question: Question, evidence: dict[Candidate, Evidence], machine: Machine,
                source: dict[str, Any] | None = None, environment: dict[str, Any] | None = None) -> Advice:  # fmt: skip
    """The advice for ``evidence`` already gathered: no measuring, the same answer every time."""
    question = check_question(question)
    rows = weigh(question, evidence, machine)
    ranked = rank(question, rows)
    runs = sorted({run for found in evidence.values() for run in found.runs})
    machine_summary = {"free_bytes": machine.free_bytes, "free_inodes": machine.free_inodes,
                       "memory_bytes": machine.memory_bytes}  # fmt: skip
    if environment:
        machine_summary["description"] = describe(environment)
    return Advice(question, rows, ranked, recommendation_text(question, ranked, rows), source or {},
                  machine_summary, runs)  # fmt: skip


def advise(
    question: Question,
    db: Any,
    work_dir: str = "data/runs",
    on_progress: Callable[[str], None] = lambda line: None,
    run_ids: list[str] | None = None,
) -> Advice:
    """Which format should hold ``question``'s dataset, from measurements on a sample of it.

    Earlier finished runs on the same data and machine, with stores set up the same way, are
    reused: a format they measured at two counts or more (up to a quarter of the largest
    planned) is not measured again. The others are measured within ``question.time_budget_s``
    (see :mod:`storage.advice.sampling`), recorded in ``db`` like any run.

    Args:
        run_ids: advise from these stored runs only and measure nothing (a shared link does this).

    Raises:
        InvalidQuestionError: a question that cannot be answered as given.
        UnknownBackendError, DataNotFoundError, ...: as a benchmark run raises them.
    """
    question = check_question(question)
    images, source, photos = describe_source(question)
    machine_key, environment = this_machine(work_dir)
    candidates = candidates_for(question, photos, work_dir)
    evidence = stored_evidence(db, question, candidates, photos, source, machine_key, run_ids)
    for found in evidence.values():
        found.reused_runs = list(found.runs)
        found.refused = refusal(found.candidate.backend, images.images, source["description"])
    notes = []
    loader = one_size(images.images)
    if question.access == "shuffled" and not loader:
        notes.append(
            "the images have several sizes, which a DataLoader cannot batch without a resizing transform: "
            "a shuffled epoch is projected as one random read per image, in one process"
        )
    if run_ids is None:
        todo = [c for c, found in evidence.items() if found.refused is None and not covered(found, question, loader)]
        reused = [c.label for c, found in evidence.items() if found.refused is None and c not in todo]
        if reused:
            notes.append(f"reused earlier runs for {', '.join(reused)}")
            on_progress(notes[-1])
        if todo:
            new_runs = measure(question, db, todo, photos, work_dir, on_progress, loader)
            fresh = stored_evidence(db, question, todo, photos, source, machine_key, new_runs)
            for candidate in todo:
                evidence[candidate].measurements += fresh[candidate].measurements
                evidence[candidate].runs += fresh[candidate].runs
    notes.append(f"stores keep {encoding_for(question, photos)}; counts measured up to {sample_counts(question)[-1]:,}")
    advice = advise_from(question, evidence, Machine.here(work_dir), source, environment)
    advice.notes = notes + advice.notes
    return advice
