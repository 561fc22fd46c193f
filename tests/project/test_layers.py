"""The package's layers, read from the source with `ast`: every import (those inside functions too; only those
under `if TYPE_CHECKING:` are exempt) points downward, no module imports another's private name or reads
another object's private attribute, and pool/ keeps the order docs/architecture.md describes."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "migpool"

# The packages from the bottom up (docs/architecture.md draws them): a module may import modules of its own unit
# and of units of a lower rank only. Inside pool/ the order goes on, one rank per subpackage. The two package
# roots (migpool and migpool.pool) import their public names lazily and are left out.
RANKS = {
    "errors": (0, 0),
    "ui": (0, 0),
    "interrupts": (0, 0),  # Ctrl-C in the command line
    "accelerators": (1, 0),
    "mig": (1, 0),  # the MIG model: catalog and its data, layout, planner
    "catalog": (2, 0),  # the catalog's stable import path
    "host": (2, 0),  # this machine's state: state dirs, safe files, locks, leases, journal, device files
    "backend": (3, 0),  # the driver: NVML or the simulator
    "integrations": (4, 0),  # mig-parted, Slurm, Kubernetes
    "observe": (4, 0),  # telemetry, top, the exporter, pools' published stats
    "reconcile": (5, 0),  # applying layouts: plan, apply, operations, persist, the boot service
    "pool.api": (6, 0),  # what users write: tasks, providers, Image, refs
    "pool.wire": (6, 0),  # what travels: messages, frames, pickling, segments, streams
    "pool.shared": (6, 1),  # the pool-wide collections
    "pool.worker": (6, 2),  # the worker process and the plugin chain
    "pool.scheduler": (6, 3),  # the queue and one slot per worker
    "pool.dynamic": (6, 4),  # dynamic MIG: site, sizing, policy, controller
    "pool.raypool": (6, 5),  # Ray: one actor per partition
    "pool.compute": (6, 6),  # Compute assembles the pool
    "plugins": (7, 0),
    "ray": (7, 0),
    "launch": (7, 0),  # migpool run
    "advise": (7, 0),  # migpool advise: the event model, its search, the record read back
    "cli": (8, 0),
    "__main__": (9, 0),
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


def _unit(module: str) -> str | None:
    """The unit of RANKS a module belongs to (None for the two package roots)."""
    parts = module.split(".")[1:]
    if not parts or parts == ["pool"]:
        return None
    key = ".".join(parts[:2]) if parts[0] == "pool" else parts[0]
    return key


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) is not None))
def test_modules_import_only_lower_layers(module):
    mine = _unit(module)
    assert mine in RANKS, f"{module} has no place in RANKS (and in docs/architecture.md)"
    upward = [
        m for m in _edges(module) if (other := _unit(m)) is not None and other != mine and RANKS[other] >= RANKS[mine]
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


def test_no_module_passes_700_lines_and_no_class_400():
    """Small modules whose names say what they hold: none grows past 700 lines, no class past 400 (issue 40)."""
    long_files = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 700}
    long_classes = {
        f"{name}.{node.name}": node.end_lineno - node.lineno + 1
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > 400
    }
    assert long_files == {} and long_classes == {}
