"""The pool as dynamic MIG's policy reads it: the tasks that wait, the workers with their state, the clock and
the rule of which partition serves which task. The policy only reads this view; what it changes goes through its
effects (effects.py). In a pool the view is the scheduler's (controller.SchedulerView, built in one place); tests
and models build `PoolState` and `WorkerState` directly, from plain data."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...mig.catalog import GpuModel
from ...mig.planner import PlannedInstance
from ..api.info import Partition

Gpu = tuple[int, int]  # (node, GPU index on it)
GpuState = tuple[Gpu, GpuModel, list[PlannedInstance]]  # a GPU, its model, the partitions made before the pool
Rule = Callable[[Any, int, str | None, float | None], bool]  # (task, node, profile, memory MiB): it serves


class Flag(Protocol):
    def is_set(self) -> bool: ...


class Placed(Protocol):
    """Where a worker runs: its node and its partition (None: a whole GPU or none)."""

    @property
    def node(self) -> int: ...

    @property
    def partition(self) -> Partition | None: ...


class Pid(Protocol):
    @property
    def pid(self) -> int | None: ...


class WorkerView(Protocol):
    """What the policy reads of a worker (a pool's Slot; WorkerState in tests), never writes."""

    @property
    def draining(self) -> bool: ...  # it takes no new task

    @property
    def outstanding(self) -> Sequence[Any]: ...  # the jobs it runs (one at most in a dynamic pool)

    @property
    def ready(self) -> Flag: ...  # set once its process is up

    @property
    def dead_reason(self) -> str | None: ...

    @property
    def spec(self) -> Placed: ...

    @property
    def stats(self) -> Pid: ...


class PoolView(Protocol):
    """What the policy reads of the pool. `lock` holds it still: what is read under it is one moment's state, and
    effects carried out under it act on that state."""

    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    @property
    def pending(self) -> Sequence[Any]: ...  # the jobs that wait, oldest first

    @property
    def workers(self) -> Sequence[WorkerView]: ...

    def now(self) -> float: ...  # monotonic seconds

    def serves(self, task: Any, node: int, profile: str | None, memory_mib: float | None) -> bool:
        """Whether a partition of `profile` with `memory_mib` on `node` may run `task` (the scheduler's rule)."""
        ...


def _up() -> threading.Event:
    ready = threading.Event()
    ready.set()
    return ready


@dataclass(eq=False)
class WorkerState:
    """A worker as plain data: up and idle unless told otherwise. It keeps what a Slot keeps under `spec`
    (node, partition) and `stats` (pid) in its own fields, and gives itself for both. Equal only to itself, as a
    worker is."""

    partition: Partition | None = None
    node: int = 0
    pid: int | None = None
    draining: bool = False
    outstanding: list[Any] = field(default_factory=list)
    ready: threading.Event = field(default_factory=_up)
    dead_reason: str | None = None

    @property
    def spec(self) -> WorkerState:
        return self

    @property
    def stats(self) -> WorkerState:
        return self


@dataclass
class PoolState:
    """A pool as plain data: the jobs that wait, the workers, a clock and the serving rule (the scheduler's
    `serves`, passed in: this package's policy does not import the scheduler)."""

    rule: Rule
    pending: list[Any] = field(default_factory=list)
    workers: list[WorkerState] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    lock: threading.RLock = field(default_factory=threading.RLock)

    def now(self) -> float:
        return self.clock()

    def serves(self, task: Any, node: int, profile: str | None, memory_mib: float | None) -> bool:
        return self.rule(task, node, profile, memory_mib)


def serves_worker(view: PoolView, w: WorkerView, task: Any) -> bool:
    """Whether worker `w` may run `task`, by the view's rule (as Slot.serves answers it)."""
    p = w.spec.partition
    return view.serves(task, w.spec.node, p.profile if p else None, p.memory_mib if p else None)
