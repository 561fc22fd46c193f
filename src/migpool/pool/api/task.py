"""Lazy tasks: `@migpool.function` makes calls return a Task, which runs when sent to a Compute.

task >> compute          its result
task > compute           a concurrent.futures.Future
task @ compute           once on every node: a list with one result per node, in node order
(a & b & c) >> compute   in parallel: a list of results in order (parenthesize: `>>` binds before `&`)
gather(*tasks) >> compute                 the same
gather(*tasks, stream=True) >> compute    an iterator of the results, in task order as they come
gather(*tasks, stream=True, ordered=False) >> compute      in the order they finish

A generator function made with `@stream` (or `@function`, as in the reference's 0.10) streams: `>> compute` is an
iterator of what it yields. The reference's 0.12 names are aliases: Pending (Task), Group, Streaming.

A task that may move between partitions (dynamic MIG) is a generator made with `@function(checkpoint=True)`: it
yields checkpoints (any value, or `Checkpoint(state, done=, total=)` to say how far it is), returns its result,
and takes `resume=`, the last checkpoint's state, when it runs again after a move.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar, overload

from .attempts import Policy
from .checkpoints import Checkpoint
from .current import resolve

R = TypeVar("R")
__all__ = [
    "Checkpoint",
    "Gather",
    "Group",
    "Pending",
    "RemoteFunction",
    "Streaming",
    "Task",
    "compute",
    "function",
    "gather",
    "stream",
]


class Runs(Protocol):
    """What the operators need of a pool: it runs tasks (`migpool.Compute` is one)."""

    def run(self, task: Task[Any]) -> Any: ...

    def run_async(self, task: Task[Any]) -> Future[Any]: ...

    def broadcast(self, task: Task[Any]) -> list[Any]: ...

    def run_parallel(self, group: Group) -> list[Any] | Iterator[Any]: ...


@dataclass(frozen=True)
class Task(Generic[R]):
    """A function with its arguments; nothing runs until it is sent to a Compute."""

    fn: Callable[..., R]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    partition: str | None = None
    retries: int | None = None
    timeout: float | None = None
    node: int | None = None  # run on this node (broadcast sets it)
    min_memory: str | None = None  # instead of a profile: any partition with at least this memory
    need_mib: float | None = None  # min_memory in MiB, set when the task is submitted
    checkpoint: bool = False  # a generator of checkpoints (Checkpoint): dynamic MIG may move it
    retry: Policy | None = None  # after a failed attempt: (reason, attempt) -> run it again? (attempts.Retry)
    queue_timeout: float | None = None  # seconds it may wait for a worker; past them it fails, never having run

    def on(self, partition: str) -> Task[R]:
        """Run this task only on a worker whose MIG partition has this profile (e.g. '3g.40gb')."""
        return replace(self, partition=partition)

    def with_options(self, *, retries: int | None = None, timeout: float | None = None) -> Task[R]:
        return replace(
            self,
            retries=self.retries if retries is None else retries,
            timeout=self.timeout if timeout is None else timeout,
        )

    def with_timeout(self, timeout: float) -> Task[R]:
        """This task with a timeout of `timeout` seconds: past it, its worker is stopped and the task fails with
        TaskTimeoutError (a TimeoutError)."""
        return replace(self, timeout=timeout)

    def with_retry(self, retry: Policy | None) -> Task[R]:
        """This task with a retry policy, `(reason, attempt) -> bool` (see Retry); None: no retry."""
        return replace(self, retry=retry)

    def with_queue_timeout(self, seconds: float | None) -> Task[R]:
        """This task failing with QueueTimeoutError (a TaskFailedError) if no worker starts it within `seconds`;
        None or 0: it waits as long as it takes."""
        return replace(self, queue_timeout=checked_seconds(seconds, "queue_timeout"))

    def __rshift__(self, compute: Runs) -> R:
        return resolve(compute).run(self)

    def __gt__(self, compute: Runs) -> Future[R]:  # `>` sends, as in the reference API
        return resolve(compute).run_async(self)

    def __matmul__(self, compute: Runs) -> list[R]:
        return resolve(compute).broadcast(self)

    def __and__(self, other: Task[Any] | Group) -> Group:
        return Group((self,)) & other

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        where = f" on {self.partition}" if self.partition else f" needing {self.min_memory}" if self.min_memory else ""
        return f"<Task {name}{where}>"


class RemoteFunction(Generic[R]):
    """What `@migpool.function` returns: calling it builds a Task; `.local(...)` calls the function here."""

    def __init__(
        self,
        fn: Callable[..., R],
        partition: str | None,
        retries: int | None,
        timeout: float | None,
        min_memory: str | None = None,
        checkpoint: bool = False,
        retry: Policy | None = None,
        queue_timeout: float | None = None,
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.partition = partition
        self.retries = retries
        self.timeout = timeout
        self.min_memory = min_memory
        self.checkpoint = checkpoint
        self.retry = retry
        self.queue_timeout = queue_timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Task[R]:
        return Task(
            self.fn,
            args,
            kwargs,
            self.partition,
            self.retries,
            self.timeout,
            min_memory=self.min_memory,
            checkpoint=self.checkpoint,
            retry=self.retry,
            queue_timeout=self.queue_timeout,
        )

    def local(self, *args: Any, **kwargs: Any) -> R:
        """Call the function here (a checkpoint task runs to its end here: its result, its checkpoints dropped)."""
        if not self.checkpoint:
            return self.fn(*args, **kwargs)
        gen: Any = self.fn(*args, **kwargs)
        while True:
            try:
                next(gen)
            except StopIteration as end:
                return end.value  # type: ignore[no-any-return,unused-ignore]

    def __reduce__(self) -> Any:
        fields = (self.partition, self.retries, self.timeout, self.min_memory, self.checkpoint, self.retry)
        return (type(self), (self.fn, *fields, self.queue_timeout))


@overload
def function(fn: Callable[..., R]) -> RemoteFunction[R]: ...


@overload
def function(
    *,
    partition: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    min_memory: str | None = None,
    checkpoint: bool = False,
    retry: Policy | None = None,
    queue_timeout: float | None = None,
) -> Callable[[Callable[..., R]], RemoteFunction[R]]: ...


def function(
    fn: Callable[..., R] | None = None,
    *,
    partition: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    min_memory: str | None = None,
    checkpoint: bool = False,
    retry: Policy | None = None,
    queue_timeout: float | None = None,
) -> Any:
    """Decorate a function so that calling it returns a lazy Task (`@migpool.function` or with options:
    `partition="3g.40gb"`, or `min_memory="30GB"` for the smallest partition with that much; `checkpoint=True` for
    a generator of checkpoints that dynamic MIG may move between partitions, see Checkpoint; `retry=` a retry
    policy, see Retry; `queue_timeout=` the seconds a call may wait for a worker before it fails unrun).

    A generator function streams what it yields (`>> compute` is an iterator), as in the reference's 0.10; the
    reference's 0.12 refuses that and asks for `@stream`, which is the same here."""
    queue_timeout = checked_seconds(queue_timeout, "queue_timeout")
    if partition is not None and min_memory is not None:
        raise ValueError("give partition= or min_memory=, not both")
    if min_memory is not None:
        from ...mig.layout import parse_memory_mib

        parse_memory_mib(min_memory)  # a clear error now, not at submit

    def make(f: Callable[..., R]) -> RemoteFunction[R]:
        if checkpoint:
            _check_resumable(f)
        return RemoteFunction(f, partition, retries, timeout, min_memory, checkpoint, retry, queue_timeout)

    return make(fn) if fn is not None else make


def checked_seconds(seconds: float | None, what: str) -> float | None:
    """`seconds` as a timeout: None or 0 mean none; a negative or non-number one is refused."""
    if seconds is None or (not isinstance(seconds, bool) and isinstance(seconds, (int, float)) and seconds == 0):
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"{what} is a number of seconds > 0 (or None or 0 for no limit), not {seconds!r}")
    return float(seconds)


def _check_resumable(f: Callable[..., Any]) -> None:
    """A checkpoint task is a generator function that takes `resume=`: say so at once, not when it first moves."""
    name = getattr(f, "__qualname__", repr(f))
    if not inspect.isgeneratorfunction(f):
        raise TypeError(
            f"@function(checkpoint=True) needs a generator function that yields its checkpoints; {name} is not one "
            "(write `yield Checkpoint(state, done=i, total=n)` where it may stop, and `return` its result)"
        )
    params = inspect.signature(f).parameters
    if "resume" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(
            f"@function(checkpoint=True): {name} must take a `resume=None` argument, the state of its last "
            "checkpoint when it runs again after a move"
        )


compute = function


@dataclass(frozen=True)
class Group:
    """Tasks sent together: `(a & b & c) >> compute` or `gather(a, b, c) >> compute` runs them in parallel and
    gives a list of their results in task order (a tuple in the reference's 0.10, a list since its 0.11); with
    `stream=True`, an iterator of them as they come (in task order, or in the order they finish with
    `ordered=False`). `timeout` applies to each task that has none."""

    tasks: tuple[Task[Any], ...]
    stream: bool = False
    ordered: bool = True
    timeout: float | None = None

    def __and__(self, other: Task[Any] | Group) -> Group:
        if isinstance(other, Streaming):
            raise TypeError(not_groupable(other))
        if isinstance(other, Group):
            return replace(self, tasks=self.tasks + other.tasks)
        if isinstance(other, Task):
            return replace(self, tasks=self.tasks + (other,))
        raise TypeError(
            f"& joins tasks, and {type(other).__name__} is not one. Python binds >> before &: `a & b >> pool` runs b "
            "alone first; write `(a & b) >> pool`, or decorate the function with @migpool.function"
        )

    def with_timeout(self, timeout: float) -> Group:
        return replace(self, timeout=timeout)

    def __rshift__(self, compute: Runs) -> list[Any] | Iterator[Any]:
        got = resolve(compute).run_parallel(self)
        return list(got) if isinstance(got, tuple) else got

    @property
    def pendings(self) -> tuple[Task[Any], ...]:
        """The tasks (the reference's 0.12 name)."""
        return self.tasks

    @property
    def items(self) -> tuple[Task[Any], ...]:
        """The tasks (the reference's 0.10 name)."""
        return self.tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task[Any]]:
        return iter(self.tasks)


Gather = Group  # (the name of earlier migpool versions)
Pending = PendingFunction = Task  # (the reference's 0.11+ name, and its 0.10 one)
PendingFunctionGroup = Group  # (the reference's 0.10 name)


@dataclass(frozen=True)
class Streaming(Task[R]):
    """A call of a `@stream` generator function: `>> compute` is an iterator of what it yields, pulled from one
    worker as it comes. It is run alone: it cannot be broadcast (`@`), sent with `>` or gathered (`&`)."""

    def __matmul__(self, compute: Runs) -> list[R]:
        raise TypeError(f"{self!r} is a stream: send it with `>> compute` (an iterator); `@` runs plain tasks")

    def __gt__(self, compute: Runs) -> Future[R]:
        raise TypeError(f"{self!r} is a stream: send it with `>> compute` (an iterator); `>` sends plain tasks")

    def __and__(self, other: Task[Any] | Group) -> Group:
        raise TypeError(not_groupable(self))


def not_groupable(s: Task[Any]) -> str:
    return f"{s!r} is a stream and cannot be gathered: send it alone with `>> compute`, which is an iterator"


class StreamFunction(RemoteFunction[R]):
    """What `@migpool.stream` returns: calling it builds a Streaming."""

    def __call__(self, *args: Any, **kwargs: Any) -> Streaming[R]:
        return Streaming(self.fn, args, kwargs, timeout=self.timeout)


def stream(fn: Callable[..., Any] | None = None, *, timeout: float | None = None) -> Any:
    """Decorate a generator function so that calling it returns a Streaming: `>> compute` is an iterator of what
    it yields on a worker, as it comes (`@migpool.stream` or `@migpool.stream(timeout=seconds)`)."""

    def make(f: Callable[..., Any]) -> StreamFunction[Any]:
        if not inspect.isgeneratorfunction(f):
            name = getattr(f, "__qualname__", repr(f))
            raise TypeError(
                f"@stream needs a generator function (one that yields), and {name} is not one; "
                "use @function for a function that returns its result"
            )
        return StreamFunction(f, None, None, timeout)

    return make(fn) if fn is not None else make


def gather(*tasks: Task[Any], stream: bool = False, ordered: bool = True) -> Group:
    """Group tasks to run in parallel: `gather(a, b) >> compute` is a list of their results in order. With
    `stream=True`, `>> compute` is an iterator that yields each result as it is done, in task order (`ordered`,
    the default) or in the order they finish (`ordered=False`)."""
    flat: list[Task[Any]] = []
    for t in tasks:
        if isinstance(t, (list, tuple)):
            flat.extend(t)
        else:
            flat.append(t)
    for t in flat:
        if not isinstance(t, Task):
            raise TypeError(f"gather takes tasks (calls of @migpool.function functions), got {t!r}")
        if isinstance(t, Streaming):
            raise TypeError(not_groupable(t))
    return Group(tuple(flat), stream, ordered)
