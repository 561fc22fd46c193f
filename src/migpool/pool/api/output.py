"""A task's own output, with the reference system's names: `silent`, `stdout`, `stderr`, `redirect_output`,
`CallbackWriter`, and `emit` (a named event with a JSON payload).

The decorators wrap the function itself, so they travel with it to the worker that runs it. They swap the
process's sys.stdout/sys.stderr while the task runs: on a pool of threads (several tasks in one process at
once) they act on the output of every task running at that moment."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from .info import InstanceInfo, instance_info
from .task import RemoteFunction

events = logging.getLogger("migpool.events")
Only = int | Sequence[int] | Literal["head"] | Callable[[InstanceInfo], bool] | None


class CallbackWriter(io.TextIOBase):
    """A text stream that hands each write to `callback`."""

    def __init__(self, callback: Callable[[str], Any]) -> None:
        super().__init__()
        self.callback = callback

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if s:
            self.callback(s)
        return len(s)


@contextlib.contextmanager
def redirect_output(callback: Callable[[str], Any]) -> Iterator[tuple[CallbackWriter, CallbackWriter]]:
    """Inside the block, what is printed to stdout and stderr goes to `callback`; yields the two writers."""
    out, err = CallbackWriter(callback), CallbackWriter(callback)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def _selected(only: Only) -> bool:
    if only is None:
        return True
    info = instance_info()
    if only == "head":
        return info.is_head
    if callable(only):
        return bool(only(info))
    if isinstance(only, int):
        return info.rank == only
    return info.rank in only


def _wrap(fn: Any, keep_out: bool, keep_err: bool, only: Only) -> Any:
    if isinstance(fn, RemoteFunction):  # decorated after @function: wrap the function it holds
        fn.fn = _wrap(fn.fn, keep_out, keep_err, only)
        return fn

    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        show = _selected(only)
        with open(os.devnull, "w") as null, contextlib.ExitStack() as stack:
            if not (keep_out and show):
                stack.enter_context(contextlib.redirect_stdout(null))
            if not (keep_err and show):
                stack.enter_context(contextlib.redirect_stderr(null))
            return fn(*args, **kwargs)

    return quiet


def silent(fn: Any) -> Any:
    """Decorate a task's function so that its stdout and stderr are dropped; its result still comes back."""
    return _wrap(fn, False, False, None)


def stdout(fn: Any = None, *, only: Only = None) -> Any:
    """Decorate a task's function so that only its stdout is shown (its stderr is dropped); with `only=` (a
    rank, several ranks, "head", or a function of its Info), only on those nodes (elsewhere both are dropped)."""
    return _wrap(fn, True, False, only) if fn is not None else lambda f: _wrap(f, True, False, only)


def stderr(fn: Any = None, *, only: Only = None) -> Any:
    """As stdout(), for stderr: only the task's stderr is shown."""
    return _wrap(fn, False, True, only) if fn is not None else lambda f: _wrap(f, False, True, only)


MAX_EVENT_BYTES = 64 * 1024


def emit(name: str, payload: Any = None) -> None:
    """Record a named event with a JSON payload: logged at INFO on the 'migpool.events' logger as one JSON line
    (with the node and worker it came from). TypeError when the payload is not JSON, ValueError past 64 KiB."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"emit's name is a non-empty string, not {name!r}")
    info = instance_info()
    try:
        line = json.dumps({"name": name, "payload": payload, "node": info.node, "worker": info.worker})
    except (TypeError, ValueError) as e:
        raise TypeError(f"emit({name!r}, ...): the payload must be JSON (dicts, lists, str, numbers): {e}") from e
    if len(line.encode()) > MAX_EVENT_BYTES:
        raise ValueError(f"emit({name!r}, ...): the event is over {MAX_EVENT_BYTES // 1024} KiB; send less")
    events.info(line)
