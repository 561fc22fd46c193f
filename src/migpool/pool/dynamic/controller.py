"""Dynamic MIG's controller: one thread that runs the policy (policy.py) a step at a time; the view it reads
(SchedulerView: the scheduler's queue and workers) and the effects that carry its decisions out (SiteEffects):
partitions made on a change thread per node (nodes side by side; on one machine the driver makes GPU instances
one at a time anyway), destroyed through the site (`reconcile.change`: apply's checks, the GPU's lock, journal
and rollback), workers started, drained, paused and retired, and tasks failed, through the scheduler. This module
is the one place where dynamic MIG touches the scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

from ...errors import PoolBrokenError
from ...mig.planner import PlannedInstance
from ..api.info import Partition
from ..api.task import Task
from ..scheduler.core import Job, Scheduler, serves
from ..scheduler.slot import Slot
from ..scheduler.threads import Threads
from .policy import DynamicPolicy
from .remembered import load, save
from .site import Site
from .sizing import RunTimes
from .view import Gpu, WorkerView

log = logging.getLogger("migpool.dynamic")
TICK_S = 0.1
STOP_S = 30.0  # how long stop() waits for the controller's step under way


class SchedulerView:
    """The pool as the policy reads it (view.PoolView), live from the scheduler: its lock, its queue, its workers
    and its serving rule; `clock`: monotonic seconds. The one place the policy's reads come from in a pool."""

    def __init__(self, sched: Scheduler, clock: Callable[[], float] = time.monotonic) -> None:
        self.sched, self.clock = sched, clock

    @property
    def lock(self) -> AbstractContextManager[Any]:
        return self.sched.lock

    @property
    def pending(self) -> Sequence[Job]:
        return self.sched.pending

    @property
    def workers(self) -> Sequence[Slot]:
        return self.sched.workers

    def now(self) -> float:
        return self.clock()

    def serves(self, task: Any, node: int, profile: str | None, memory_mib: float | None) -> bool:
        return serves(task, node, profile, memory_mib)


class SiteChanges:
    """The site's side of the policy's effects: partitions made on a change thread per node (named
    migpool-change-N, shut down by `shutdown()`), destroyed, and their workers started. `wake` is called as each
    create ends."""

    def __init__(self, site: Site, wake: Callable[[], None]) -> None:
        self.site, self.wake = site, wake
        self.changers: dict[int, ThreadPoolExecutor] = {}

    def make(self, gpu: Gpu, inst: PlannedInstance) -> Future[list[Partition]]:
        changer = self.changers.get(gpu[0])
        if changer is None:
            changer = self.changers[gpu[0]] = ThreadPoolExecutor(1, thread_name_prefix=f"migpool-change-{gpu[0]}")
        done = changer.submit(self.site.change, gpu, [inst], [])
        done.add_done_callback(lambda _: self.wake())
        return done

    def unmake(self, gpu: Gpu, instances: list[PlannedInstance], pids: Sequence[int]) -> None:
        self.site.change(gpu, [], instances, pids)

    def start_worker(self, part: Partition) -> WorkerView:
        return self.site.start_worker(part)

    def shutdown(self) -> None:
        """Wait for the creates under way (the pool's teardown removes what they made)."""
        for changer in self.changers.values():
            changer.shutdown(wait=True)


class SiteEffects(SiteChanges):
    """The policy's effects in a pool (effects.Effects): the site's changes, and the scheduler's side: its
    workers drained, paused and retired, its waiting jobs failed or handed out. The one place the policy's
    decisions write to the scheduler, through its public attributes and methods."""

    def __init__(self, site: Site, sched: Scheduler, wake: Callable[[], None]) -> None:
        super().__init__(site, wake)
        self.sched = sched

    def retire(self, worker: WorkerView) -> None:
        self.sched.retire(cast(Slot, worker))

    def drain(self, workers: Iterable[WorkerView], on: bool = True) -> None:
        with self.sched.lock:
            for w in workers:
                cast(Slot, w).draining = on

    def pause(self, worker: WorkerView, job: Any) -> None:
        with self.sched.lock:
            cast(Slot, worker).pause(job)

    def fail(self, failed: Sequence[tuple[Any, BaseException]]) -> None:
        with self.sched.lock:
            taken = [(j, e) for j, e in failed if j in self.sched.pending]
            for j, _ in taken:
                self.sched.pending.remove(j)
        for j, e in taken:
            if not j.future.done():
                j.future.set_exception(e)

    def pump(self) -> None:
        self.sched.pump()


class DynamicMig:
    """The controller: `start()` hands it the scheduler's waiting tasks and starts its thread; `stop()` ends
    both. `policy` is the class that decides (DynamicPolicy; benchmarks/dynamic.py passes another)."""

    def __init__(
        self,
        sched: Scheduler,
        site: Site,
        keep_idle: float,
        remember: Path | None = None,
        policy: type[DynamicPolicy] = DynamicPolicy,
    ) -> None:
        """`remember`: the file of run times learned by earlier pools (pool/remembered.py), read now and updated
        when the pool closes; None to start from nothing. Used only where every GPU of the pool is one model."""
        self.sched = sched
        self.effects = SiteEffects(site, sched, self.wake)
        found = site.gpus()
        names = {m.name for _, m, _ in found}
        self.remember = (remember, names.pop()) if remember is not None and len(names) == 1 else None
        sizes = RunTimes(load(*self.remember) if self.remember else None)
        self.view = SchedulerView(sched)
        self.policy = policy(found, self.view, self.effects, keep_idle, sizes)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.threads = Threads(on_error=sched.thread_died)

    def start(self) -> None:
        """Take the scheduler's waiting tasks from now on, and start deciding."""
        self.sched.provisioner = self
        self.threads.start("migpool-dynamic", self._run)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                self.policy.step()
                failures = 0
            except Exception as e:  # noqa: BLE001 - retried; three in a row fail the tasks that wait on it
                failures += 1
                log.warning("dynamic MIG: %s", e)
                if failures >= 3:
                    self.policy.fail_waiting(e)
                    failures = 0

    def stop(self, timeout: float = STOP_S) -> None:
        """Stop deciding: the controller's thread ends within `timeout` (a step under way finishes first), then
        the creates under way. Raises PoolBrokenError if the thread is still running then."""
        self._stop.set()
        self._wake.set()
        stuck = self.threads.join(timeout)
        self.effects.shutdown()
        if self.remember:
            save(*self.remember, self.policy.sizes.named())
        if stuck:
            raise PoolBrokenError(f"dynamic MIG's controller did not stop within {timeout:.0f}s (its step is stuck)")

    # --- the scheduler's side (scheduler.Provisioner) ---
    def admit(self, task: Task[Any]) -> None:
        self.policy.admit(task)

    def rank(self, job: Job, worker: Slot) -> int:
        return self.policy.rank(job, worker)

    def hold(self, job: Job, idle: Slot, held: dict[int, float]) -> bool:
        return self.policy.hold(job, idle, held)

    def finished(self, job: Job, worker: Slot, seconds: float) -> None:
        self.policy.finished(job, worker, seconds)

    def progress(self, job: Job, worker: Slot, done: float | None, total: float | None, now: float) -> None:
        self.policy.progress(job, worker, done, total, now)

    def paused(self, job: Job, worker: Slot) -> None:
        self.policy.paused(job, worker)
        self.wake()

    # --- the pool's view ---
    def partitions(self) -> list[Partition]:
        return self.policy.partitions()

    @property
    def changes(self) -> Any:
        """Every partition created or destroyed (the most recent 10,000), when, where and why."""
        return self.policy.changes

    def stats(self) -> dict[str, Any]:
        """What `compute.stats()` adds: `placement_blocked`, the waits where the free slices held a task's size
        but the placements left did not, even once idle partitions were destroyed (fragments.py; zero expected)."""
        return dict(placement_blocked=self.policy.placement_blocked)

    @property
    def sizes(self) -> RunTimes:
        return self.policy.sizes
