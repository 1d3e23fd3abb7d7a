"""The library's layers, read from its source with ``ast``: no import circles, nothing imported upwards.

Every ``import`` counts, also those inside functions: an import deferred to first use is
still a dependency, and a circle of deferred imports is still a circle a reader has to
untangle. Only imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Low to high: a module may import modules of a lower layer, or of its own group.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("storage.errors", "storage.cycled", "storage.parallel", "storage.mapped_files",
                    "storage.loader_settings", "storage.batch", "storage.write_behind", "storage.encodings",
                    "storage.image_codec", "storage.checksums", "storage.locking", "storage.manifest", "storage.folders",
                    "storage.disk_space")),
    ("interface", ("storage.base", "storage.reading", "storage.encoded", "storage.info", "storage.integrity",
                   "storage.lifecycle")),
    ("formats", ("storage.formats",)),
    ("registry", ("storage.registry",)),
    ("data", ("storage.datasets",)),
    ("library", ("storage.sharded", "storage.verify", "storage.opener", "storage.s3")),
    ("consumers", ("storage.torch", "storage.pipeline", "storage.training", "storage.distributed",
                   "storage.testing", "storage.s3_loaders")),
    ("bench", ("storage.bench",)),
    ("advice", ("storage.advice",)),
    ("cli", ("storage.cli", "storage.__main__")),
)  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _library_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((ROOT / "storage").rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.AST):
    """Every import node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The library modules that ``name`` imports (a ``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
            ]
        found.update(target for target in targets if target in modules and target != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _library_modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer_of(name: str) -> tuple[int, str] | None:
    for rank, (layer, prefixes) in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return rank, layer
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_library_module_has_a_layer():
    unplaced = [name for name in _library_modules() if name != "storage" and _layer_of(name) is None]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_no_import_circles():
    # Packages' __init__ modules re-export their children; an import of a child from its own
    # package's __init__ is how a package is built, not a circle a reader trips on.
    graph = {
        name: {target for target in targets if not (name.startswith(target + ".") and target != "storage")}
        for name, targets in _graph().items()
    }
    assert _cycles(graph) == []


def test_nothing_imports_a_higher_layer():
    upward = []
    for name, targets in _graph().items():
        if name == "storage":
            continue
        here = _layer_of(name)
        for target in sorted(targets):
            there = _layer_of(target) if target != "storage" else (len(LAYERS), "the package's re-exports")
            if here is not None and there is not None and there[0] > here[0]:
                upward.append(f"{name} ({here[1]}) imports {target} ({there[1]})")
    assert upward == []


def test_the_interface_imports_only_the_foundation():
    for name in ("storage.base",):
        assert {_layer_of(target)[1] for target in _graph()[name]} <= {"foundation", "interface"}


@pytest.mark.parametrize("limit", [700])
def test_no_library_module_is_over_the_line_limit(limit):
    long = {name: n for name, path in _library_modules().items() if (n := len(path.read_text().splitlines())) > limit}
    assert long == {}, f"split these modules (lines): {long}"


def test_a_circle_is_found_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
