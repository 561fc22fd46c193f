"""What a submit builds: a `Job` (a task on its way, with its future and packed arguments), the table of functions
the workers know by number, which workers may run a task (`serves`), and how a job's future ends when the pool
gives it up."""

from __future__ import annotations

import collections
import contextlib
import inspect
import time
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any

from ..api.task import Task
from ..wire.pickling import cloud_dumps
from ..wire.streams import OutputStream

RECENT_FUNCTIONS = 256  # function objects remembered to skip re-pickling


def serves(task: Task[Any], node: int, profile: str | None, memory_mib: float | None) -> bool:
    """Whether a worker on `node`, pinned to a partition of `profile` with `memory_mib` (None: no partition), may
    run `task`: of the profile it names, holding the memory it asks for, on the node it names."""
    if task.node is not None and task.node != node:
        return False
    if task.partition is not None:
        return profile == task.partition
    return task.need_mib is None or (memory_mib is not None and memory_mib >= task.need_mib)


class Job:
    """A submitted task on its way: its future, its function's id, its packed arguments, the stored values they
    name, its streams (a generator task's output, its iterator arguments) and its attempts."""

    __slots__ = (
        "id",
        "task",
        "future",
        "fid",
        "payload",
        "attempts",
        "retries",
        "started",
        "submitted",
        "vids",
        "stream",
        "inputs",
        "resume",
        "progress",
        "pausing",
        "moves",
        "feeder",
        "cleanup_by",
        "__weakref__",  # (the queue deadlines watch a job without keeping it alive)
    )

    def __init__(
        self,
        jid: int,
        task: Task[Any],
        future: Future[Any],
        fid: int,
        payload: Any,
        retries: int,
        vids: frozenset[int] = frozenset(),
        stream: OutputStream | None = None,
        inputs: list[Any] | None = None,
    ) -> None:
        self.id, self.task, self.future, self.fid, self.payload = jid, task, future, fid, payload
        self.attempts = 0
        self.retries = retries
        self.started = 0.0
        self.submitted = time.monotonic()  # for the workload record (observe/workload.py)
        self.vids = vids
        self.stream = stream  # a generator task's items, on their way to the caller
        self.inputs = inputs or []  # its iterator arguments, read as the task asks (None once one ended)
        self.resume: Any = None  # a checkpoint task's packed state to resume from (after a move), or None
        self.progress: tuple[float | None, float | None, float] | None = None  # its last (done, total, when)
        self.pausing = False  # asked to stop at its next checkpoint
        self.moves = 0
        self.feeder: Any = None  # the thread that reads its iterator arguments (feeding.Feeder), once asked
        self.cleanup_by: float | None = None  # a stream its consumer stopped: when its generator must have ended


class Functions:
    """The functions a pool's workers know by number, pickled once each. Identical functions (same pickled bytes,
    e.g. the same lambda made anew for each call) share one number, so neither side grows with the number of
    submits; recently seen function objects skip re-pickling."""

    def __init__(self) -> None:
        self._recent: collections.OrderedDict[int, tuple[object, int, bool]] = collections.OrderedDict()
        self._fid_by_bytes: dict[bytes, int] = {}
        self.pickled: dict[int, bytes] = {}  # each function's pickled bytes, by its number

    def number(self, fn: Any) -> tuple[int, bool]:
        """The number under which workers know `fn`, and whether it is a generator function (its items stream
        back)."""
        key = id(fn)
        got = self._recent.get(key)
        if got is not None and got[0] is fn:
            self._recent.move_to_end(key)
            return got[1], got[2]
        data = cloud_dumps(fn)
        fid = self._fid_by_bytes.setdefault(data, len(self._fid_by_bytes))
        self.pickled[fid] = data
        streams = inspect.isgeneratorfunction(getattr(fn, "fn", fn))
        self._recent[key] = (fn, fid, streams)
        if len(self._recent) > RECENT_FUNCTIONS:
            self._recent.popitem(last=False)
        return fid, streams


def cancel_future(fut: Future[Any], why: str = "the pool closed before this task ended") -> None:
    """End the future with a CancelledError that says why (Future.cancel() would leave it without a message)."""
    with contextlib.suppress(InvalidStateError):  # the caller cancelled it, or it ended meanwhile
        if not fut.done():
            fut.set_exception(CancelledError(why))
