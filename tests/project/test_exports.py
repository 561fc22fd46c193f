"""Every public name of the package roots is where type checkers see it. migpool, migpool.pool and
migpool.backend import some names on first use (a module `__getattr__`), which a type checker cannot follow: each
such name is also imported under `if TYPE_CHECKING:`, from the module the lazy import takes it from."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import migpool

SRC = Path(migpool.__file__).resolve().parent
ROOTS = {"migpool": SRC / "__init__.py", "migpool.pool": SRC / "pool" / "__init__.py"}
ROOTS["migpool.backend"] = SRC / "backend" / "__init__.py"


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def visible(source: str) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """(the names a module binds at its top level as a type checker reads it, and of those the ones imported under
    TYPE_CHECKING: name -> (relative module, the name in it; "" where the name is that module))."""
    bound: set[str] = set()
    checking: dict[str, tuple[str, str]] = {}
    for stmt in ast.parse(source).body:
        under = _is_type_checking(stmt)
        for node in stmt.body if under else [stmt]:  # type: ignore[attr-defined]
            if isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                for a in node.names:
                    bound.add(a.asname or a.name)
                    if under and node.level:  # (what the package hands out is its own: typing's names are not)
                        checking[a.asname or a.name] = (base, a.name) if node.module else (base + a.name, "")
            elif isinstance(node, ast.Import):
                bound.update((a.asname or a.name).partition(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                bound.update(t.id for t in targets if isinstance(t, ast.Name))
    return bound, checking


def left_out(source: str, lazy: dict[str, str]) -> list[str]:
    """The lazily exported names that `source` does not import under TYPE_CHECKING."""
    return sorted(set(lazy) - set(visible(source)[1]))


def _lazy(module: str) -> dict[str, str]:
    """Name -> the relative module its lazy import takes it from."""
    if module == "migpool.backend":  # its __getattr__ hands out one name
        return {"NvmlBackend": ".nvml"}
    return dict(importlib.import_module(module)._EXPORTS)


@pytest.mark.parametrize("module", sorted(ROOTS))
def test_every_public_name_is_seen_by_type_checkers(module):
    bound, _ = visible(ROOTS[module].read_text())
    assert sorted(set(importlib.import_module(module).__all__) - bound) == []


@pytest.mark.parametrize("module", sorted(ROOTS))
def test_the_type_checking_imports_are_the_lazy_exports(module):
    text = ROOTS[module].read_text()
    lazy = _lazy(module)
    checking = visible(text)[1]
    assert left_out(text, lazy) == [], "lazily exported, but not imported under TYPE_CHECKING"
    assert sorted(set(checking) - set(lazy)) == [], "imported under TYPE_CHECKING, but not exported"
    assert {name: where for name, (where, _) in checking.items()} == lazy


@pytest.mark.parametrize("module", sorted(ROOTS))
def test_each_type_checking_import_names_what_the_package_hands_out(module):
    """The name a type checker sees is the object the lazy import returns (migpool.pool's `dict` is
    shared_dict, not the builtin)."""
    pkg = importlib.import_module(module)
    for name, (where, original) in visible(ROOTS[module].read_text())[1].items():
        source = importlib.import_module(where, module)
        assert getattr(pkg, name) is (getattr(source, original) if original else source), name


def test_the_check_finds_a_name_left_out():
    line = "    from .shared.proxies import barrier, counter, lock, queue\n"
    text = ROOTS["migpool.pool"].read_text()
    assert line in text
    assert left_out(text.replace(line, ""), _lazy("migpool.pool")) == ["barrier", "counter", "lock", "queue"]


@pytest.mark.parametrize(
    "code",
    [
        "from migpool import Compute, compute",
        "from migpool.pool import Compute, compute",
        "import migpool.pool.compute\nfrom migpool import compute",
    ],
)
def test_compute_is_the_decorator_whatever_was_imported_first(code):
    """`compute` is the task decorator; pool/compute.py (Compute's module) shares its name and, once imported,
    bound it in migpool.pool: `from migpool import Compute, compute` gave the module."""
    check = f"{code}\nimport migpool\nassert compute is migpool.function, compute\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
    assert r.stdout.strip() == "ok", r.stderr
