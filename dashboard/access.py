"""What the dashboard may read, and whether its visitors may change anything.

Anyone who can open the dashboard's address can type a path into it. While the server
listens on this computer only (``server.address`` 127.0.0.1, the project's
``.streamlit/config.toml``), whoever is at the browser owns the machine; once it listens
on a network address, a visitor is anyone on that network. So the folders it reads
(image folders on the Run page, stores on the Explore page) must lie under its *data
roots*:

* always the project's ``data/`` folder, the data folder (``IMAGE_STORAGE_LAB_DATA``) and
  the run folder (``IMAGE_STORAGE_LAB_RUNS``, where kept stores are);
* plus the folders in ``IMAGE_STORAGE_LAB_ROOTS`` (separated by ``:``), set by whoever
  starts the server; without it, the home folder while the server listens on localhost
  only, and nothing more once it listens on a network address.

Paths are resolved (``..`` and symbolic links followed) before the check, and a path
outside gets one message whether or not it exists, so the dashboard tells a visitor
nothing about the rest of the disk.

``IMAGE_STORAGE_LAB_READ_ONLY=1`` makes a shared server read-only for its visitors: no
runs started or stopped, none deleted or imported, nothing downloaded. Plain Python (no
Streamlit calls at import); the address is read from Streamlit's options when asked.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage import datasets
from storage.errors import StorageError

from . import config

ROOTS_ENV = "IMAGE_STORAGE_LAB_ROOTS"
READ_ONLY_ENV = "IMAGE_STORAGE_LAB_READ_ONLY"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1", "[::1]")
READ_ONLY_NOTE = (
    "This dashboard is read-only (IMAGE_STORAGE_LAB_READ_ONLY is set by whoever runs it): runs can be "
    "looked at, compared and downloaded, not started, stopped, deleted or imported."
)


class OutsideRootsError(StorageError, PermissionError):
    """A path outside the folders the dashboard may read (said the same whether it exists or not)."""


def server_address() -> str:
    """The address the Streamlit server listens on ("" means every interface)."""
    try:
        from streamlit import config as streamlit_config

        return str(streamlit_config.get_option("server.address") or "")
    except Exception:  # not inside Streamlit: the project's own setting
        return "127.0.0.1"


def listens_locally(address: str | None = None) -> bool:
    """Whether the server can be reached from this computer only."""
    address = server_address() if address is None else address
    return address.strip() in LOCAL_ADDRESSES


def read_only() -> bool:
    """Whether visitors may only look: set ``IMAGE_STORAGE_LAB_READ_ONLY=1`` on a shared server."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _resolved(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute (relative to the project, where the server runs) with links and ``..`` followed."""
    expanded = Path(path).expanduser()
    if not expanded.is_absolute():
        expanded = config.PROJECT_ROOT / expanded
    return Path(os.path.realpath(expanded))


def data_roots(address: str | None = None) -> tuple[Path, ...]:
    """The folders the dashboard may read, resolved, each once."""
    roots = [config.PROJECT_ROOT / "data", datasets.data_dir(), config.runs_dir()]
    configured = os.environ.get(ROOTS_ENV)
    if configured is not None:
        roots.extend(Path(part) for part in configured.split(os.pathsep) if part.strip())
    elif listens_locally(address):
        roots.append(Path.home())
    return tuple(dict.fromkeys(_resolved(root) for root in roots))


def outside_message(path: str) -> str:
    """The one refusal: the same words for a path that exists and one that does not."""
    return (
        f"{path} is outside the allowed folders; add it to {ROOTS_ENV} (folders separated by ':') "
        "where the dashboard is started to allow it"
    )


def allowed_path(path: str | os.PathLike[str], address: str | None = None) -> Path:
    """``path`` resolved, if it lies under a data root; nothing on disk is opened to decide.

    Raises:
        OutsideRootsError: it lies outside every root (:func:`outside_message`).
    """
    resolved = _resolved(path)
    for root in data_roots(address):
        if resolved == root or root in resolved.parents:
            return resolved
    raise OutsideRootsError(outside_message(str(path)))


def describe_roots(address: str | None = None) -> str:
    """The data roots in words, for a page's caption."""
    return ", ".join(config.display_path(root) for root in data_roots(address))
