"""Streams between the pool and a task: a generator task's items flow back as it yields them (OutputStream on
the caller's side), and an iterator argument flows to the task as it reads it (InputStream on the worker's side).

Each way, at most WINDOW items of one stream are in flight: the worker sends an item only while it holds credit,
which the caller returns as it takes items; the worker asks for input items (Want) as it reads them. A consumer
that stops early (`break`, `close()`, the iterator dropped) cancels the task, whose generator is closed at its
next item; an error in the generator is raised where the stream got to. A stream that the pool cuts short (it
closes before the generator ended) raises CancelledError at its consumer's next read: it never looks finished.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any, Protocol

from .messages import FEED_END, FEED_ERROR

WINDOW = 16  # most items of one stream in flight each way
_OPEN = object()


class StreamArg:
    """What an iterator argument travels as: the number of its stream."""

    __slots__ = ("sid",)

    def __init__(self, sid: int) -> None:
        self.sid = sid

    def __reduce__(self) -> tuple[Any, ...]:
        return StreamArg, (self.sid,)


def is_stream(value: Any) -> bool:
    """Whether an argument streams to the task: an iterator (a generator, `iter(...)`, a map), not a container."""
    return hasattr(type(value), "__next__") and isinstance(value, collections.abc.Iterator)


def take_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]]:
    """The arguments with each iterator among them replaced by a StreamArg, and those iterators by number."""
    inputs: list[Any] = []
    for v in args:
        if is_stream(v):
            break
    else:
        if not kwargs or not any(is_stream(v) for v in kwargs.values()):
            return args, kwargs, inputs

    def swap(v: Any) -> Any:
        if not is_stream(v):
            return v
        inputs.append(v)
        return StreamArg(len(inputs) - 1)

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}, inputs


def give_inputs(
    args: tuple[Any, ...], kwargs: dict[str, Any], make: Callable[[int], Iterator[Any]]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments with each StreamArg replaced by `make(sid)`, the iterator the task reads."""

    def swap(v: Any) -> Any:
        return make(v.sid) if type(v) is StreamArg else v

    for v in args:
        if type(v) is StreamArg:
            break
    else:
        if not kwargs or not any(type(v) is StreamArg for v in kwargs.values()):
            return args, kwargs
    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}


class Link(Protocol):
    """How a running task reaches its pool: the worker's channel (worker.py) or a Ray actor's (ray_pool.py)."""

    def emit(self, tid: int, item: Any) -> bool:
        """Send one packed item of task `tid`'s stream (waiting for credit); False once the consumer stopped."""
        ...

    def want(self, tid: int, sid: int, n: int) -> None:
        """Ask the caller for `n` more items of input stream `sid`."""
        ...

    def next_feed(self, tid: int, sid: int) -> tuple[Any, int]:
        """The next (data, state) for input stream `sid`, waiting for it."""
        ...

    def checkpointed(self, tid: int, done: float | None, total: float | None) -> bool:
        """Task `tid` yielded a checkpoint (`done` of `total` units): report it; True when the pool asks the task
        to stop there, to resume elsewhere."""
        ...


class InputStream:
    """The iterator a task reads for an iterator argument: items come from the caller as it reads them."""

    def __init__(self, link: Link, tid: int, sid: int, unpack: Callable[[Any], Any]) -> None:
        self.link, self.tid, self.sid, self.unpack = link, tid, sid, unpack
        self.asked = 0  # items asked for and not yet received
        self.done = False

    def __iter__(self) -> InputStream:
        return self

    def __next__(self) -> Any:
        if self.done:
            raise StopIteration
        if self.asked <= WINDOW // 2:  # ask ahead, so the next items are on their way while this one is used
            self.link.want(self.tid, self.sid, WINDOW - self.asked)
            self.asked = WINDOW
        data, state = self.link.next_feed(self.tid, self.sid)
        self.asked -= 1
        if state == FEED_END:
            self.done = True
            raise StopIteration
        if state == FEED_ERROR:
            self.done = True
            raise self.unpack(data)
        return self.unpack(data)


class OutputStream:
    """The pool's buffer of a generator task's items, as the worker yields them, in order, then the end or the
    error that ended it. The caller reads it through StreamResults."""

    def __init__(self, unpack: Callable[[Any], Any], credit: Callable[[int], None], cancel: Callable[[], None]):
        self._unpack, self._credit, self._cancel = unpack, credit, cancel
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._end: Any = _OPEN  # None once it ended well, else the exception that ended it
        self._taken = 0  # items taken since credit was last returned
        self._read = 0  # items taken in all
        self.started = False  # an item reached the caller (the task can no longer be retried)
        self.closed = False  # the consumer stopped
        self.cut_short = False  # the pool stopped it before it ended

    # --- the pool's side ---
    def push(self, data: Any) -> None:
        with self._cond:
            self.started = True
            if not self.closed and not self.cut_short:
                self._items.append(data)
                self._cond.notify_all()

    def finish(self, error: BaseException | None) -> None:
        with self._cond:
            if self._end is _OPEN:
                self._end = error
            self._cond.notify_all()

    def wait_room(self, timeout: float) -> bool:
        """Wait until fewer than WINDOW items wait for the caller; whether they do."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._items) < WINDOW or self.closed or self.cut_short, timeout)

    def cut(self) -> None:
        """The pool closes before the stream ended: its task is stopped, the items not yet read are dropped (their
        memory goes with the pool), and its consumer's next read raises CancelledError instead of ending."""
        with self._cond:
            if self.closed or self._end is not _OPEN:
                return
            self.cut_short = True
            self._items.clear()
            self._end = CancelledError(
                f"the pool was closed while this stream was unfinished, after {self._read} items were read: its "
                "task was stopped there. Read a stream to its end (or close it) before the pool closes"
            )
            self._cond.notify_all()
        self._cancel()

    # --- the caller's side ---
    def next(self) -> Any:
        with self._cond:
            while not self._items and self._end is _OPEN and not self.closed:
                self._cond.wait()
            if self.closed:
                raise StopIteration
            if not self._items:
                self.closed = True
                if self._end is not None:
                    raise self._end
                raise StopIteration
            data = self._items.popleft()
            self._taken += 1
            self._read += 1
            give = self._taken if self._taken >= WINDOW // 2 and self._end is _OPEN else 0
            if give:
                self._taken = 0
            self._cond.notify_all()
        if give:
            self._credit(give)
        return self._unpack(data)

    def close(self) -> None:
        """Stop the stream: the task's generator is closed at its next item and its worker freed."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            running = self._end is _OPEN
            self._items.clear()
            self._cond.notify_all()
        if running:
            self._cancel()


class StreamResults:
    """What `gen(...) >> compute` returns: an iterator of the task's items as its worker yields them. `close()`,
    a `break` out of a loop over it (once it is dropped) or dropping it unread stops the task early."""

    __slots__ = ("_stream",)

    def __init__(self, stream: OutputStream) -> None:
        self._stream = stream  # the pool holds the stream, not this: dropping this closes it

    def __iter__(self) -> StreamResults:
        return self

    def __next__(self) -> Any:
        return self._stream.next()

    def close(self) -> None:
        self._stream.close()

    def __del__(self) -> None:
        self._stream.close()
