"""``python -m storage backends``: the registered backends, and why any is unavailable here."""

from __future__ import annotations

import argparse

from .. import registry


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    commands.add_parser("backends", help="list the registered backends").set_defaults(run=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return run()


def run() -> int:
    """Print a table of every registered backend, then the reason of each one unavailable here."""
    from ..bench.report import text_table

    rows, unavailable = [], []
    for name in registry.backends(available_only=False):
        info = registry.backend_info(name)
        status = "available" if info.available else "unavailable"
        rows.append([name, info.label, "lossless" if info.lossless else "lossy", status, info.description])
        if not info.available:
            unavailable.append(f"{name}: {info.unavailable_reason}")
    print(text_table(["name", "label", "fidelity", "status", "description"], rows))
    for line in unavailable:
        print(f"unavailable {line}")
    return 0
