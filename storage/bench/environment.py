"""Describe the machine a run measured: every result is stored next to this description.

Numbers from a 2-core virtual machine and from a workstation are not comparable, so a
run records the CPU, cores, memory, operating system, the filesystem its stores were
written to, free disk space, and the versions of Python and of every storage library.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import resource
import shutil
import socket
import sys
import types
from pathlib import Path
from typing import Any

import psutil

from ..parallel import worker_count

# Libraries whose version changes storage speed; backends add the ones they import.
CORE_DISTRIBUTIONS = ("numpy", "Pillow", "lmdb", "h5py", "zarr", "numcodecs", "pyarrow", "webdataset", "psutil")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def existing_parent(path: str | os.PathLike[str]) -> Path:
    """``path`` or its nearest existing ancestor (a run folder may not exist yet)."""
    current = Path(path).resolve()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def filesystem_of(path: str | os.PathLike[str]) -> dict[str, str]:
    """Mount point, filesystem type and device of ``path``: the longest matching mount."""
    target = str(existing_parent(path))
    best = {"mount_point": "", "type": "unknown", "device": "unknown"}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mount_point, fs_type = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best["mount_point"]):
            best = {"mount_point": mount_point, "type": fs_type, "device": device}
    return best


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    """Which distribution provides each top-level module: read once per process (it reads every
    installed package's file list, seconds on a busy machine)."""
    return importlib.metadata.packages_distributions()


def library_versions() -> dict[str, str]:
    """Versions of Python's storage libraries: the core list plus what backends need.

    Registered backends name their packages; modules already imported are also looked at
    (for backends registered as classes). Nothing is imported for this, so describing the
    machine does not load torch through LitData, say, for a run that never reads with it.
    """
    names = set(CORE_DISTRIBUTIONS)
    try:
        from .. import registry

        mapping = _packages_distributions()
        modules = []
        for backend in registry.backends(available_only=False):
            names.update(registry.backend_requirements(backend))
            modules.append(sys.modules.get(registry.backend_module(backend)))
        for module in modules:
            for value in vars(module).values() if module else ():
                top = getattr(value, "__name__", "").split(".")[0] if isinstance(value, types.ModuleType) else ""
                names.update(mapping.get(top, []))
    except Exception:  # a broken backend must not stop a run from describing the machine
        pass
    spelled = {name.lower(): name for name in names}
    spelled.update({name.lower(): name for name in CORE_DISTRIBUTIONS})
    versions = {}
    for key in sorted(spelled):
        name = spelled[key]
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def peak_rss_bytes() -> int:
    """The highest resident memory this process has used so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def capture_environment(data_dir: str | os.PathLike[str] = "data") -> dict[str, Any]:
    """Everything about this machine that a reader needs to judge a run's numbers."""
    folder = existing_parent(data_dir)
    memory = psutil.virtual_memory()
    disk = shutil.disk_usage(folder)
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 1,
        "usable_cores": worker_count(),
        "ram_bytes": memory.total,
        "ram_available_bytes": memory.available,
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "data_dir": str(Path(data_dir).resolve()),
        "filesystem": filesystem_of(folder),
        "disk_free_bytes": disk.free,
        "disk_total_bytes": disk.total,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "libraries": library_versions(),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def describe(environment: dict[str, Any]) -> str:
    """One line that names the machine, for tables and reports."""
    fs = environment.get("filesystem", {})
    ram = environment.get("ram_bytes", 0) / 2**30
    libs = environment.get("libraries", {})
    versions = ", ".join(f"{name} {libs[name]}" for name in ("numpy", "Pillow", "lmdb", "h5py") if name in libs)
    return (
        f"{environment.get('cpu_model', '?')}, {environment.get('usable_cores', '?')} cores, {ram:.0f} GiB RAM, "
        f"{environment.get('os', '?')}, {fs.get('type', '?')} at {fs.get('mount_point', '?')}, "
        f"Python {environment.get('python', '?')}" + (f", {versions}" if versions else "")
    )
