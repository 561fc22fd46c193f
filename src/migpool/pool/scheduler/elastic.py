"""Elastic nodes (`Nodes(initial, min, max)` with max > min): how many nodes a pool runs as its load changes.

Three parts. `decide` is the whole rule, pure: the target is the nodes its running and waiting tasks fill
(`per_node` tasks each), held between `min` and `max`; below it, nodes are added; above it, nodes idle for
`idle_timeout` seconds are reclaimed, the highest-numbered first, down to the target. A `NodeEffect` carries out a
decision: it starts a node's workers through the scheduler and retires them (this module's is a local pool's:
node processes on this machine; a Ray pool's, raypool/elastic.py, starts and ends the actors of a Ray node).
`Elastic` reads the scheduler on a thread of its own, asks `decide`, has the effect apply it at most once per
`cooldown`, and counts the nodes for `current_nodes()`.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import InvalidStateError
from dataclasses import dataclass

from ...errors import WorkerStartError
from ..api.nodes import Nodes, Options
from ..api.providers import WorkerSpec
from .core import Scheduler
from .slot import Slot
from .threads import Threads

TICK_S = 0.05  # how often the load is read: a task sent to a pool at zero nodes waits about this long for one
RETIRE_S = 10.0  # how long a reclaimed node's worker gets to exit once asked


@dataclass(frozen=True)
class NodeLoad:
    """One node as `decide` sees it: its tasks (running and queued at it) and how long it has been idle (0 while
    busy or starting)."""

    node: int
    jobs: int
    idle_for: float


def decide(
    loads: Sequence[NodeLoad], pending: int, per_node: int, bounds: Nodes, idle_timeout: float
) -> tuple[int, tuple[int, ...]]:
    """(how many nodes to add, which nodes to reclaim) for this load."""
    running = sum(n.jobs for n in loads)
    wanted = -(-(pending + running) // max(1, per_node))
    target = max(bounds.min, min(bounds.max, wanted))
    if len(loads) < target:
        return target - len(loads), ()
    idle = sorted((n for n in loads if n.jobs == 0 and n.idle_for >= idle_timeout), key=lambda n: -n.node)
    return 0, tuple(n.node for n in idle[: len(loads) - target])


def by_node(specs: Sequence[WorkerSpec]) -> dict[int, list[WorkerSpec]]:
    """The workers' specs, node by node."""
    out: dict[int, list[WorkerSpec]] = {}
    for s in specs:
        out.setdefault(s.node, []).append(s)
    return out


def tasks_per_node(specs: Sequence[WorkerSpec]) -> int:
    """The tasks a node of these workers runs at once (what `decide` fills a node with)."""
    if not specs:
        return 1
    return max(1, len(specs) // len(by_node(specs))) * specs[0].threads


class NodeEffect:
    """Adds and reclaims a pool's nodes through its scheduler: node k's workers are `specs[k]`; `started(slot)`: a
    worker of an added node started (a local pool's plugins' hook). The slots are whatever kind the scheduler makes
    (a local pool's worker processes here)."""

    def __init__(self, sched: Scheduler, specs: dict[int, list[WorkerSpec]], started: Callable[[Slot], None]) -> None:
        self.sched, self.specs, self.started = sched, specs, started

    def free(self, running: set[int]) -> list[int]:
        """The nodes that may be added now, in the order to add them."""
        return [k for k in sorted(self.specs) if k not in running]

    def add(self, node: int) -> bool:
        """Start node `node`'s workers (they take tasks once ready); False when the pool closed meanwhile."""
        for spec in self.specs[node]:
            try:
                w = self.sched.add_worker(spec)
            except RuntimeError:  # the pool closed meanwhile
                return False
            self.started(w)
        return True

    def reclaim(self, workers: Sequence[Slot]) -> None:
        """Stop these workers for good (they are idle and take no job any more)."""
        for w in workers:
            self.sched.retire(w, RETIRE_S)


class Elastic:
    """Keeps a pool's nodes between its bounds as its load changes, through `effect`."""

    def __init__(
        self,
        sched: Scheduler,
        effect: NodeEffect,
        bounds: Nodes,
        per_node: int,
        idle_timeout: float,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sched, self.effect, self.bounds, self.per_node = sched, effect, bounds, per_node
        self.idle_timeout, self.cooldown, self.clock = idle_timeout, cooldown, clock
        self._idle_since: dict[int, float] = {}
        self._activity: dict[int, int] = {}  # tasks started on each node, last seen
        self._last_change = -float("inf")
        self._stop = threading.Event()
        self._steady = threading.Lock()  # held by a step, and by a broadcast while it sends a task to each node
        self._threads = Threads(on_error=sched.thread_died)

    def start(self) -> None:
        self._threads.start("migpool-elastic", self._run)

    def stop(self) -> None:
        """Stop deciding (the pool closes); waits for a step under way."""
        self._stop.set()
        self._threads.join(RETIRE_S + 5)

    def nodes(self) -> int:
        """The nodes the pool runs now (each with at least one worker, started or starting)."""
        return len(self.node_indexes())

    def node_indexes(self) -> list[int]:
        """The indexes of the nodes the pool runs now, in order."""
        with self.sched.lock:
            return sorted({w.spec.node for w in self.sched.workers})

    @contextlib.contextmanager
    def steady(self) -> Iterator[list[int]]:
        """The nodes the pool runs now, none reclaimed until the block ends (a broadcast sends each a task; once
        sent, a task waiting for its node keeps that node)."""
        with self._steady:
            yield self.node_indexes()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self.step()

    def _loads(self, now: float) -> tuple[list[NodeLoad], dict[int, list[Slot]], int]:
        """Each node's load, its workers, and the tasks waiting in the pool's queue for any node (lock held); a
        task waiting for one node (a broadcast's) is that node's load."""
        by_node: dict[int, list[Slot]] = {}
        for w in self.sched.workers:
            by_node.setdefault(w.spec.node, []).append(w)
        waiting = collections.Counter(j.task.node for j in self.sched.pending)
        loads = []
        for k, ws in sorted(by_node.items()):
            jobs = sum(len(w.outstanding) for w in ws) + waiting[k]
            activity = sum(w.stats.tasks_started for w in ws)
            ready = all(w.ready.is_set() for w in ws)
            if jobs or not ready or self._activity.get(k) != activity:
                self._idle_since[k] = now
            self._activity[k] = activity
            loads.append(NodeLoad(k, jobs, now - self._idle_since.setdefault(k, now)))
        for k in set(self._idle_since) - set(by_node):
            del self._idle_since[k]
            self._activity.pop(k, None)
        return loads, by_node, waiting[None]

    def step(self) -> None:
        """Read the load once and carry out what `decide` says (unless the last change is within the cooldown)."""
        with self._steady:
            self._step()

    def _step(self) -> None:
        now = self.clock()
        with self.sched.lock:
            if self.sched.closed:
                return
            loads, by_node, pending = self._loads(now)
        add, drop = decide(loads, pending, self.per_node, self.bounds, self.idle_timeout)
        # the cooldown spaces changes out, but never keeps a task waiting at zero nodes
        if not (add or drop) or (now - self._last_change < self.cooldown and (by_node or not add)):
            return
        retiring: list[Slot] = []
        with self.sched.lock:  # a node reclaimed only if it is still idle; it takes no job from here on
            waited_for = {j.task.node for j in self.sched.pending}  # (a task sent to one node keeps it)
            for k in drop:
                ws = by_node[k]
                if all(not w.outstanding for w in ws) and k not in waited_for:
                    for w in ws:
                        w.draining = True
                    retiring.extend(ws)
        self.effect.reclaim(retiring)
        free = self.effect.free(set(by_node))
        if add and not by_node and not free:
            self._fail_waiting()
        for k in free[:add]:
            if not self.effect.add(k):
                return
        if add or retiring:
            self._last_change = now

    def _fail_waiting(self) -> None:
        """No node runs and none can be started (a Ray pool's Ray nodes left the cluster): the tasks waiting for
        one fail now, rather than wait for ever (and close() with them)."""
        with self.sched.lock:
            doomed = list(self.sched.pending)
            self.sched.pending.clear()
        for j in doomed:
            with contextlib.suppress(InvalidStateError):  # (it ended meanwhile)
                j.future.set_exception(
                    WorkerStartError(
                        f"{j.task!r} cannot run: the pool is at zero nodes and none of its nodes can be started "
                        "again (they left the Ray cluster); open a new pool"
                    )
                )


def elastic_nodes(
    sched: Scheduler, effect: NodeEffect, specs: Sequence[WorkerSpec], bounds: Nodes, options: Options
) -> Elastic:
    """An `Elastic` for a pool whose workers, on every node it may run, are `specs`, started."""
    elastic = Elastic(
        sched, effect, bounds, tasks_per_node(specs), options.autoscale_idle_timeout, options.autoscale_cooldown
    )
    elastic.start()
    return elastic
