"""Lazy tasks: `@migpool.function` makes calls return a Task, which runs when sent to a Compute.

task >> compute          its result
task > compute           a concurrent.futures.Future
task @ compute           once on every node: a list with one result per node, in node order
(a & b & c) >> compute   in parallel: a tuple of results in order (parenthesize: `>>` binds before `&`)
gather(*tasks) >> compute                 the same
gather(*tasks, stream=True) >> compute    an iterator of the results, in task order as they come
gather(*tasks, stream=True, ordered=False) >> compute      in the order they finish

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

from .checkpoints import Checkpoint

R = TypeVar("R")
__all__ = ["Checkpoint", "Gather", "Group", "RemoteFunction", "Task", "compute", "function", "gather"]


class Runs(Protocol):
    """What the operators need of a pool: it runs tasks (`migpool.Compute` is one)."""

    def run(self, task: Task[Any]) -> Any: ...

    def run_async(self, task: Task[Any]) -> Future[Any]: ...

    def broadcast(self, task: Task[Any]) -> list[Any]: ...

    def run_parallel(self, group: Group) -> tuple[Any, ...] | Iterator[Any]: ...


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

    def __rshift__(self, compute: Runs) -> R:
        return compute.run(self)

    def __gt__(self, compute: Runs) -> Future[R]:  # `>` sends, as in the reference API
        return compute.run_async(self)

    def __matmul__(self, compute: Runs) -> list[R]:
        return compute.broadcast(self)

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
    ) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.partition = partition
        self.retries = retries
        self.timeout = timeout
        self.min_memory = min_memory
        self.checkpoint = checkpoint

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
        return (RemoteFunction, (self.fn, self.partition, self.retries, self.timeout, self.min_memory, self.checkpoint))


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
) -> Callable[[Callable[..., R]], RemoteFunction[R]]: ...


def function(
    fn: Callable[..., R] | None = None,
    *,
    partition: str | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    min_memory: str | None = None,
    checkpoint: bool = False,
) -> Any:
    """Decorate a function so that calling it returns a lazy Task (`@migpool.function` or with options:
    `partition="3g.40gb"`, or `min_memory="30GB"` for the smallest partition with that much; `checkpoint=True` for
    a generator of checkpoints that dynamic MIG may move between partitions, see Checkpoint)."""
    if partition is not None and min_memory is not None:
        raise ValueError("give partition= or min_memory=, not both")
    if min_memory is not None:
        from ...mig.layout import parse_memory_mib

        parse_memory_mib(min_memory)  # a clear error now, not at submit

    def make(f: Callable[..., R]) -> RemoteFunction[R]:
        if checkpoint:
            _check_resumable(f)
        return RemoteFunction(f, partition, retries, timeout, min_memory, checkpoint)

    return make(fn) if fn is not None else make


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
    gives a tuple of their results in task order; with `stream=True`, an iterator of them as they come (in task
    order, or in the order they finish with `ordered=False`). `timeout` applies to each task that has none."""

    tasks: tuple[Task[Any], ...]
    stream: bool = False
    ordered: bool = True
    timeout: float | None = None

    def __and__(self, other: Task[Any] | Group) -> Group:
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

    def __rshift__(self, compute: Runs) -> tuple[Any, ...] | Iterator[Any]:
        return compute.run_parallel(self)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task[Any]]:
        return iter(self.tasks)


Gather = Group  # (the name of earlier migpool versions)


def gather(*tasks: Task[Any], stream: bool = False, ordered: bool = True) -> Group:
    """Group tasks to run in parallel: `gather(a, b) >> compute` is a tuple of their results in order. With
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
    return Group(tuple(flat), stream, ordered)
