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
import io
import marshal
import os
import pickle
import sys
import types
from collections import ChainMap
from collections.abc import Callable
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
    task_module = sys.modules.get("migpool.pool.api.task")
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


def _memoryview_from(buf: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    m = memoryview(buf).cast("B")
    return m if fmt == "B" and len(shape) == 1 else m.cast(fmt, shape)  # type: ignore[call-overload]


def _memoryview_reduce(m: memoryview) -> tuple[Any, ...]:
    # a memoryview pickles as its bytes, which travel out of band when large (segments.py); its format and shape
    # come back with it
    data = pickle.PickleBuffer(m) if m.c_contiguous else m.tobytes()
    return _memoryview_from, (data, m.format, tuple(m.shape or ()))


def _tensor_from(data: Any, dtype: Any, shape: tuple[int, ...]) -> Any:
    import numpy
    import torch

    raw = numpy.frombuffer(data, dtype=numpy.uint8)
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def _tensor_reduce(t: Any) -> Any:
    """A plain CPU tensor travels as its bytes (out of band when large), not through torch.save's copy."""
    import torch

    if t.device.type != "cpu" or t.requires_grad or t.layout != torch.strided or t.is_quantized or t.is_sparse:
        return t.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    flat = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
    return _tensor_from, (pickle.PickleBuffer(flat), t.dtype, tuple(t.shape))


_EXTRA: dict[type, Any] = {}  # what _extra_reducers returned last: cloudpickle's table reads it


def _extra_reducers() -> dict[type, Any]:
    """Reducers plain pickle lacks: memoryviews and, once torch is imported here, its CPU tensors."""
    if memoryview not in _EXTRA:
        _EXTRA[memoryview] = _memoryview_reduce
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(getattr(torch, "Tensor", None), type) and torch.Tensor not in _EXTRA:
        _EXTRA[torch.Tensor] = _tensor_reduce
    return _EXTRA


@cache
def _pickler_class() -> type:
    import copyreg

    import cloudpickle

    base = cloudpickle.Pickler

    class Pickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = ChainMap(
            _EXTRA, {types.CodeType: _code_reduce}, getattr(base, "dispatch_table", copyreg.dispatch_table)
        )

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.FunctionType):
                ref = _wrapped_by_reference(obj)
                if ref is not None:
                    return import_function, ref
            return super().reducer_override(obj)

    return Pickler


BufferCallback = Callable[[pickle.PickleBuffer], bool] | None


def cloud_dumps(obj: Any, buffer_callback: BufferCallback = None) -> bytes:
    """cloudpickle, with functions by reference where they can be and code with its real file names."""
    _extra_reducers()
    buf = io.BytesIO()
    _pickler_class()(buf, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback).dump(obj)
    return buf.getvalue()


MAIN = b"__main__"  # in a plain pickle where it names a global of the caller's script (or, rarely, in data)


def dumps(obj: Any, buffer_callback: BufferCallback = None) -> bytes:
    """Plain pickle where it works (fast), else `cloud_dumps` (lambdas, closures, `__main__` objects, memoryviews).
    Buffers go to `buffer_callback` (protocol 5), which keeps one out of band by returning False."""
    try:
        if "torch" not in sys.modules:
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback)
        else:
            import copyreg

            buf = io.BytesIO()
            p = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback)
            p.dispatch_table = ChainMap(_extra_reducers(), copyreg.dispatch_table)  # type: ignore[arg-type]
            p.dump(obj)
            data = buf.getvalue()
        if MAIN in data:  # a class or function of the caller's script, by name: a worker's __main__ lacks it
            raise pickle.PicklingError("a __main__ object: by value")
        return data
    except (pickle.PicklingError, AttributeError, TypeError):
        if buffer_callback is not None:
            raise _RetryError from None
        return cloud_dumps(obj)


class _RetryError(Exception):
    """Plain pickle could not: the caller's buffers start again with cloudpickle."""


def dumps_out_of_band(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """`obj` pickled as `dumps` does, with every buffer left out of the pickle: the pickle and those buffers, in
    order (what `pickle.loads(body, buffers=...)` takes). A value without buffers costs what `dumps` costs."""
    found: list[pickle.PickleBuffer] = []
    try:
        return dumps(obj, found.append), found  # type: ignore[arg-type]  # append's None: out of band
    except _RetryError:
        found.clear()
        return cloud_dumps(obj, found.append), found  # type: ignore[arg-type]
