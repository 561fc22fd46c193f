"""How functions and values travel to worker processes.

Plain pickle where it works (fast). Otherwise cloudpickle, with two differences that keep a task's traceback
pointing at the user's code whatever cloudpickle version is installed:
  - a module-level function wrapped by `@migpool.function` travels by reference (module and name), as an
    undecorated one does, so the worker runs the module's own code;
  - code that must travel by value (functions of `__main__`, lambdas, closures) keeps its real file name and
    line table (cloudpickle 3.1.3 renames every such file to "<dynamic-code>").

cloudpickle is imported on first use, so a worker that only receives plain pickles starts without it.
"""

from __future__ import annotations

import importlib
import marshal
import os
import pickle
import sys
import types
from functools import cache
from typing import Any


def _code_from_marshal(data: bytes) -> types.CodeType:
    return marshal.loads(data)


def _code_reduce(code: types.CodeType) -> tuple[Any, ...]:
    # marshal keeps every field of the code object (file name, qualified name, line table, nested code);
    # parent and worker run the same Python, which cloudpickle requires for code anyway
    return _code_from_marshal, (marshal.dumps(code),)


def import_function(module: str, qualname: str) -> Any:
    """The function `module.qualname`, unwrapped from `@migpool.function` if it is wrapped."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "fn", obj) if _is_remote_function(obj) else obj


def _is_remote_function(obj: Any) -> bool:
    task_module = sys.modules.get("migpool.pool.task")
    return task_module is not None and isinstance(obj, task_module.RemoteFunction)


def _importable_here(module: str) -> bool:
    """Whether `module` imports from this process's sys.path, which workers inherit (the directory holding its
    top-level package is on it). A module loaded from a path since removed is not: it must travel by value."""
    file = getattr(sys.modules[module], "__file__", None)
    if not file:
        return False
    depth = module.count(".") + (1 if os.path.basename(file).startswith("__init__.") else 0)
    root = os.path.realpath(os.path.join(os.path.dirname(file), *[os.pardir] * depth))
    return root in {os.path.realpath(p or os.getcwd()) for p in sys.path}


def _wrapped_by_reference(fn: types.FunctionType) -> tuple[str, str] | None:
    """(module, qualname) when `fn` is what a module-level `@migpool.function` wraps and the worker can import
    that module, else None."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname or module not in sys.modules:
        return None
    if not _importable_here(module):
        return None
    obj: Any = sys.modules[module]
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return (module, qualname) if _is_remote_function(obj) and obj.fn is fn else None


@cache
def _pickler_class() -> type:
    import copyreg
    from collections import ChainMap

    import cloudpickle

    base = cloudpickle.Pickler

    class Pickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = ChainMap(
            {types.CodeType: _code_reduce}, getattr(base, "dispatch_table", copyreg.dispatch_table)
        )

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.FunctionType):
                ref = _wrapped_by_reference(obj)
                if ref is not None:
                    return import_function, ref
            return super().reducer_override(obj)

    return Pickler


def cloud_dumps(obj: Any) -> bytes:
    """cloudpickle, with functions by reference where they can be and code with its real file names."""
    import io

    buf = io.BytesIO()
    _pickler_class()(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def dumps(obj: Any) -> bytes:
    """Plain pickle where it works (fast), else `cloud_dumps` (lambdas, closures, `__main__` objects)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return cloud_dumps(obj)
