"""The package's layers, read from the source with `ast`: every import (those inside functions too; only those
under `if TYPE_CHECKING:` are exempt) points downward, no module imports another's private name or reads
another object's private attribute, and pool/ keeps the order docs/architecture.md describes."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "migpool"

# pool/ from the bottom up: a module may import only modules of a lower rank
POOL_RANKS = {
    "checkpoints": -1,  # what a checkpoint task yields: below the task API, which reads it
    **dict.fromkeys(
        [
            "info",
            "messages",
            "pickling",
            "tracebacks",
            "threads",
            "task",
            "stats",
            "image",
            "sizing",
            "remote_errors",
            "refs",
            "shared_state",
        ],
        0,
    ),
    **dict.fromkeys(["providers", "segments", "streams", "remembered", "shard", "shared", "lifecycle"], 1),
    **dict.fromkeys(["protocol", "distributed"], 2),
    **dict.fromkeys(["worker", "chain"], 3),
    "scheduler": 4,
    "site": 5,
    **dict.fromkeys(["ray_pool", "policy"], 6),
    "dynamic": 7,
    "compute": 8,
}
ALLOWED_PRIVATE = {"os._exit"}  # the standard library's own spelling


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = list(f.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of import nodes under `if TYPE_CHECKING:`."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(name: str) -> list[tuple[ast.AST, str, list[str]]]:
    """(node, module imported, names taken from it) for every import of module `name`."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[ast.AST, str, list[str]]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node, target, [a.name for a in node.names]))
    return out


def _edges(name: str) -> set[str]:
    """The package's modules that `name` imports."""
    found = set()
    for _, target, names in _imports(name):
        for n in names or [""]:
            full = f"{target}.{n}" if n else target
            if full in MODULES:
                found.add(full)
            elif target in MODULES:
                found.add(target)
    found.discard(name)
    return found


def test_no_import_cycle():
    graph = {m: _edges(m) for m in MODULES}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert cycles == []


def test_no_private_name_imported_across_modules():
    bad = [
        f"{name}:{node.lineno} imports {n} from {target}"
        for name in MODULES
        for node, target, names in _imports(name)
        for n in names
        if target.startswith("migpool") and n.startswith("_") and not n.startswith("__")
    ]
    assert bad == []


def test_no_private_attribute_of_another_object_is_read():
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                v = node.value
                if isinstance(v, ast.Name) and v.id in ("self", "cls"):
                    continue
                if ast.unparse(node) not in ALLOWED_PRIVATE:
                    bad.append(f"{name}:{node.lineno} reads {ast.unparse(node)}")
    assert bad == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("migpool.pool.")))
def test_pool_modules_import_only_lower_layers(module):
    mine = module.removeprefix("migpool.pool.")
    assert mine in POOL_RANKS, f"{module} has no place in POOL_RANKS (and in docs/architecture.md)"
    upward = [
        m
        for m in _edges(module)
        if m.startswith("migpool.pool.") and POOL_RANKS[m.removeprefix("migpool.pool.")] >= POOL_RANKS[mine]
    ]
    assert upward == []


def test_the_check_sees_a_cycle_and_a_private_import(tmp_path, monkeypatch):
    """The checks above can fail: a planted cycle and a planted private import are found."""
    pkg = tmp_path / "migpool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import _hidden\n")
    (pkg / "b.py").write_text("from . import a\n_hidden = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", _modules())
    assert _edges("migpool.a") == {"migpool.b"} and _edges("migpool.b") == {"migpool.a"}
    with pytest.raises(AssertionError):
        test_no_import_cycle()
    with pytest.raises(AssertionError):
        test_no_private_name_imported_across_modules()
