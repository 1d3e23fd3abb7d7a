"""``python -m storage download-cifar10``: fetch the full CIFAR-10, md5-checked."""

from __future__ import annotations

import argparse

from .. import datasets


def add_parser(commands: argparse._SubParsersAction, database: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("download-cifar10", help="download the full CIFAR-10 (170 MB)")
    parser.add_argument("--root", default=None, help="data folder (default: data/)")
    parser.set_defaults(run=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return run(args.root)


def run(root: str | None = None) -> int:
    """Download CIFAR-10 into ``root`` (``data/`` without it), unless a complete copy is there."""
    folder = datasets.download_cifar10(root=root, progress=True)
    print(f"CIFAR-10 is in {folder}")
    return 0
