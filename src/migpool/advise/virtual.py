"""Dynamic MIG's own policy (pool.dynamic.policy.DynamicPolicy, unchanged) driven in virtual time: a trace of
hours replays without a process sleeping. Around the policy, what a pool does is modelled: the scheduler hands
each waiting job, in order, to an idle worker that serves it, as Scheduler.pump does (the policy's rank() and
hold() included); a partition takes `create_s` to make and its worker `start_s` to start (with `fresh_s`: the
pool's warm spares are modelled, docs/guides/warm.md: a worker takes `start_s` where a parked spare is ready, else
`fresh_s`, and each spare taken is replaced, ready `fresh_s` later); a job runs at the speed
its profile has for it, reports a checkpoint every `chunk_share` of its work, stops at a checkpoint when the
policy asks (Worker.pause) and pays `resume_s` when it resumes; the policy steps after every event and every
`tick_s`. `order` (not what a pool does): the waiting jobs are kept sorted by this key, least first.
benchmarks/miso.py checks it against real pools (--real)."""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import types
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..mig.catalog import GpuModel
from ..mig.planner import PlannedInstance
from ..pool.dynamic.controller import SchedulerView, SiteEffects
from ..pool.dynamic.policy import DynamicPolicy
from ..pool.dynamic.sizing import RunTimes
from ..pool.scheduler.core import serves


@dataclass
class VJob:
    """A job: its task, how long a unit of its work takes on each profile, and how many units it has."""

    id: int
    task: Any
    fid: int
    unit_s: dict[str, float]
    units: float
    arrival: float
    done: float = 0.0
    started: float = 0.0
    progress: tuple[float | None, float | None, float] | None = None
    pausing: bool = False
    moves: int = 0
    resume: bool = False
    end: float | None = None
    ran_on: list[str] = field(default_factory=list)


class VWorker:
    def __init__(self, sim: VirtualPool, part: Any) -> None:
        self.sim = sim
        self.spec = types.SimpleNamespace(partition=part, node=0, index=next(sim.ids))
        self.outstanding: collections.deque[VJob] = collections.deque()
        self.ready = threading.Event()
        self.draining = False
        self.dead_reason = None
        self.stats = types.SimpleNamespace(pid=None)

    def serves(self, task: Any) -> bool:
        p = self.spec.partition
        return serves(task, 0, p.profile, p.memory_mib)

    def pause(self, job: VJob) -> None:
        job.pausing = True


class VScheduler:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pending: collections.deque[VJob] = collections.deque()
        self.workers: list[VWorker] = []
        self.policy: DynamicPolicy | None = None
        self.sim: VirtualPool | None = None
        self.order: Callable[[VJob], float] | None = None

    def retire(self, w: VWorker) -> None:
        if w in self.workers:
            self.workers.remove(w)

    def pump(self) -> None:
        """Scheduler.pump for a dynamic pool: one job per worker, in order, the policy's rank and hold."""
        assert self.policy is not None and self.sim is not None
        if self.order is not None:
            ordered = sorted(self.pending, key=self.order)
            self.pending.clear()
            self.pending.extend(ordered)
        held: dict[int, float] = {}
        i = 0
        while i < len(self.pending):
            job = self.pending[i]
            free = [w for w in self.workers if w.ready.is_set() and not w.draining and not w.outstanding]
            best = min(
                (w for w in free if w.serves(job.task)),
                default=None,
                key=lambda w: self.policy.rank(job, w),  # type: ignore[union-attr]
            )
            if best is None or self.policy.hold(job, best, held):
                i += 1
                continue
            del self.pending[i]
            self.sim.run(job, best)


class VEffects(SiteEffects):
    """The site's side modelled; the scheduler's side (drain, pause, fail, pump) is SiteEffects' own, on VScheduler."""

    def __init__(self, sim: VirtualPool) -> None:
        super().__init__(None, sim.sched, lambda: None)  # type: ignore[arg-type]
        self.sim = sim

    def make(self, gpu: Any, inst: PlannedInstance) -> Future[list[Any]]:
        fut: Future[list[Any]] = Future()
        part = types.SimpleNamespace(
            profile=inst.profile.name, memory_mib=inst.profile.memory_mib, node=gpu[0], gpu_index=gpu[1], uuid=""
        )
        self.sim.at(self.sim.now + self.sim.create_s, lambda: fut.set_result([part]))
        return fut

    def unmake(self, gpu: Any, instances: list[PlannedInstance], pids: Sequence[int]) -> None:
        pass

    def retire(self, worker: VWorker) -> None:  # type: ignore[override]
        self.sim.sched.retire(worker)

    def start_worker(self, part: Any) -> VWorker:
        w = VWorker(self.sim, part)
        self.sim.sched.workers.append(w)

        def up() -> None:
            w.ready.set()
            self.sim.sched.pump()

        self.sim.at(self.sim.now + self.sim.start_seconds(), up)
        return w


class VirtualPool:
    def __init__(
        self,
        gpus: Sequence[tuple[tuple[int, int], GpuModel]],
        keep_idle: float = 30.0,
        sizes: RunTimes | None = None,
        create_s: float = 0.092,
        start_s: float = 1.0,
        fresh_s: float | None = None,
        spares: int = 1,
        resume_s: float = 30.0,
        chunk_share: float = 0.01,
        tick_s: float = 5.0,
        policy: type[DynamicPolicy] = DynamicPolicy,
        order: Callable[[VJob], float] | None = None,
    ) -> None:
        self.now = 0.0
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.ids = itertools.count()
        self.create_s, self.start_s, self.resume_s, self.chunk_share, self.tick_s = (
            create_s,
            start_s,
            resume_s,
            chunk_share,
            tick_s,
        )
        self.fresh_s = fresh_s
        self.spares_ready = [0.0] * spares  # when each warm spare is (or will be) parked
        self.sched = VScheduler()
        self.sched.sim = self
        self.sched.order = order
        self.policy = policy(
            [(g, m, []) for g, m in gpus],
            SchedulerView(self.sched, clock=lambda: self.now),  # type: ignore[arg-type]
            VEffects(self),  # type: ignore[arg-type]
            keep_idle,
            sizes,
        )
        self.sched.policy = self.policy
        self.jobs: list[VJob] = []

    def start_seconds(self) -> float:
        """How long the worker of a partition made now takes to start: `start_s`, or with spares modelled,
        `start_s` if a spare is parked (it is taken, and its replacement parked `fresh_s` from now), else
        `fresh_s` (a fresh process; the pool takes a spare only once it is parked)."""
        if self.fresh_s is None:
            return self.start_s
        k = min(range(len(self.spares_ready)), key=self.spares_ready.__getitem__, default=None)
        if k is None or self.spares_ready[k] > self.now:
            return self.fresh_s
        self.spares_ready[k] = self.now + self.fresh_s
        return self.start_s

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.events, (t, next(self.seq), fn))

    def submit(self, job: VJob) -> None:
        def arrive() -> None:
            self.policy.admit(job.task)
            self.sched.pending.append(job)
            self.sched.pump()

        self.jobs.append(job)
        self.at(job.arrival, arrive)

    def run(self, job: VJob, w: VWorker) -> None:
        """`job` starts on `w`: a checkpoint every chunk of its work, as its profile's speed allows."""
        w.outstanding.append(job)
        job.started = self.now
        profile = w.spec.partition.profile
        job.ran_on.append(profile)
        start = self.now + (self.resume_s if job.resume else 0.0)
        chunk = max(job.units * self.chunk_share, 1e-9)

        def checkpoint(t: float) -> None:
            job.done = min(job.units, job.done + chunk)
            if job.task.checkpoint:  # a plain task says nothing until it ends: its run time is learned then
                job.progress = (job.done, job.units, t)
                self.policy.progress(job, w, job.done, job.units, t)
            if job.done >= job.units - 1e-9:
                w.outstanding.clear()
                job.end = t
                self.policy.finished(job, w, t - job.started)
                self.sched.pump()
                return
            if job.pausing and job.task.checkpoint:
                w.outstanding.clear()
                job.pausing, job.resume = False, True
                job.moves += 1
                self.sched.pending.appendleft(job)
                self.policy.paused(job, w)
                self.sched.pump()
                return
            self.at(t + chunk * job.unit_s[profile], lambda: checkpoint(self.now))

        self.at(start + chunk * job.unit_s[profile], lambda: checkpoint(self.now))

    def replay(self, limit_s: float = 1e7) -> list[VJob]:
        """Run until every job ended (RuntimeError past `limit_s` of virtual time: a job nothing will run)."""
        next_tick = 0.0
        while self.events or any(j.end is None for j in self.jobs):
            if self.now > limit_s:
                raise RuntimeError(
                    f"jobs still waiting after {limit_s:g} s: {[j.id for j in self.jobs if j.end is None]}"
                )
            if not self.events or self.events[0][0] > next_tick:
                self.now = max(self.now, next_tick)
                next_tick = self.now + self.tick_s
                self.policy.step()
                self.sched.pump()
                continue
            t, _, fn = heapq.heappop(self.events)
            self.now = t
            fn()
            while self.events and self.events[0][0] <= t:
                heapq.heappop(self.events)[2]()
            self.policy.step()
            self.sched.pump()
        return self.jobs
