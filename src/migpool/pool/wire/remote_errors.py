"""A task's exception, brought back as itself: what the worker sends when pickling cannot rebuild it, and how
the parent rebuilds it (an instance of a class derived from both its own class and RemoteError, so that
`except ItsClass:` still catches it)."""

from __future__ import annotations

import importlib
import pickle
from typing import Any, NamedTuple

from ...errors import RemoteError, TaskExitError


class ExceptionDescription(NamedTuple):
    """An exception that pickling cannot rebuild (its __init__ takes other arguments, or it holds something that
    cannot be pickled): its class's module and name, its message, and the attributes that could be pickled."""

    module: str
    qualname: str
    message: str
    attrs: dict[str, Any]


def as_task_error(e: BaseException) -> BaseException:
    """SystemExit and KeyboardInterrupt raised in a task fail that task, never the caller's program."""
    if isinstance(e, SystemExit):
        exc = TaskExitError(f"the task called sys.exit({e.code!r})")
        exc.code = e.code
        return exc
    if isinstance(e, KeyboardInterrupt):
        return TaskExitError("the task raised KeyboardInterrupt")
    return e


def pickled(e: BaseException, dumps: Any) -> bytes:
    """`e` pickled so that the parent gets it back: itself where a round trip rebuilds it, else described."""
    try:
        data: bytes = dumps(e)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - any failure to rebuild it means it travels described
        pass
    attrs = {}
    for k, v in vars(e).items():
        try:
            pickle.loads(dumps(v))
        except Exception:  # noqa: BLE001 - an attribute that does not travel is left out
            continue
        attrs[k] = v
    cls = type(e)
    return dumps(ExceptionDescription(cls.__module__, cls.__qualname__, str(e), attrs))


def _class(module: str, qualname: str) -> type[BaseException] | None:
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - not importable here: the exception comes back as a RemoteError
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseException) else None


def rebuild(d: ExceptionDescription) -> BaseException:
    """An instance of a class derived from the exception's own class (where it imports here) and RemoteError,
    with its message and attributes; a plain RemoteError where the class cannot be had."""
    cls = _class(d.module, d.qualname)
    text = f"{d.qualname}: {d.message}" if d.message else d.qualname
    if cls is None or not issubclass(cls, Exception):
        exc: BaseException = RemoteError(f"{text} (its class could not be imported here)")
    else:
        try:
            derived = type(cls.__name__, (cls, RemoteError), {"__str__": lambda self: self.args[0]})
            derived.__module__ = cls.__module__
            derived.__qualname__ = cls.__qualname__
            exc = Exception.__new__(derived)
            Exception.__init__(exc, d.message)
        except TypeError:  # a layout that cannot be combined with RemoteError's
            exc = RemoteError(text)
    for k, v in d.attrs.items():
        try:
            setattr(exc, k, v)
        except (AttributeError, TypeError):
            continue
    return exc
