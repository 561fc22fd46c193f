"""The messages between the pool and a worker, parent to worker and back. Each travels pickled in one frame
(protocol.py) or, to a Ray actor, in a batch."""

from __future__ import annotations

from typing import Any, NamedTuple


# --- parent to worker ---
class DefineFunction(NamedTuple):
    """The pickled function that later RunTask messages name by `fid`."""

    fid: int
    data: bytes


class RunTask(NamedTuple):
    tid: int
    fid: int
    payload: bytes  # the pickled (args, kwargs)


class Stop(NamedTuple):
    """Finish the task at hand, then exit."""


# --- worker to parent ---
class Ready(NamedTuple):
    pid: int
    executable: str


class TaskDone(NamedTuple):
    tid: int
    result: bytes  # pickled


class TaskFailed(NamedTuple):
    tid: int
    exception: bytes | None  # the pickled exception, None where it could not be pickled
    chain: list[Any]  # its traceback chain (tracebacks.capture)
    text: str  # "TypeName: message", for when it cannot be rebuilt


ToWorker = DefineFunction | RunTask | Stop
FromWorker = Ready | TaskDone | TaskFailed
