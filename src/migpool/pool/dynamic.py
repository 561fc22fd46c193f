"""Dynamic MIG: partitions made on demand for the profiles the waiting tasks name.

Policy (one thread, woken when work waits or a worker goes idle, and every 0.1 s):
  1. A task runs on an idle worker of its profile (a task that names none takes any idle worker).
  2. Where a profile's waiting tasks outnumber its idle and starting workers, one partition of it is created
     where the planner finds room, at the placement that leaves the most room for larger profiles.
  3. If there is no room, idle partitions are destroyed to make it: the set that disturbs the fewest workers,
     then leaves the most room. A busy partition is never destroyed.
  4. No starvation: when the oldest waiting task cannot get its partition even so, its GPU is reserved for it:
     the partitions in the way take no new task and are destroyed as they finish, and nothing else is created
     in that GPU until the task's partition exists.
  5. A partition idle for `keep_idle` seconds, with nothing waiting for its profile, is destroyed.
A profile that no GPU of the pool can hold fails its task at once, with the planner's explanation. Every change
goes through `reconcile.change` (apply's checks, lock, journal and rollback) and is logged with its reason.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

from .. import reconcile
from ..errors import MigpoolError, PluginError
from ..layout import parse_memory_mib
from ..planner import PlannedInstance, can_place, explain, max_addable
from .info import Partition

if TYPE_CHECKING:
    from ..catalog import GpuModel, Profile
    from .compute import Compute
    from .scheduler import WorkerProcess

log = logging.getLogger("migpool.dynamic")
TICK_S = 0.1
CHANGES_KEPT = 10_000  # the most recent creates, destroys and reservations kept for `compute.changes`


@dataclass
class Slot:
    """A partition the pool made, and its worker."""

    gpu: int
    instance: PlannedInstance
    worker: WorkerProcess
    idle_since: float | None = None


class DynamicMig:
    def __init__(self, compute: Compute, gpus: list[int], keep_idle: float) -> None:
        self.compute = compute
        self.sched = compute._sched
        self.backend = compute.node.backend
        self.gpus = gpus
        self.models = {i: self.backend.model(i) for i in gpus}
        # partitions that were there before the pool: obstacles, never touched
        self.foreign = {i: [a.instance for a in reconcile.actual_instances(self.backend, i)]
                        if self.backend.gpu(i).mig_current else [] for i in gpus}
        self.keep_idle = keep_idle
        self.slots: list[Slot] = []
        self.changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=CHANGES_KEPT)
        self.reserved: tuple[int, str, int] | None = None  # (gpu, profile, job id) held for a waiting task
        self.error: BaseException | None = None
        self._ids = itertools.count()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.sched.provisioner = self
        self._thread = threading.Thread(target=self._run, name="migpool-dynamic", daemon=True)
        self._thread.start()

    # --- called by the scheduler ---
    def admit(self, task: Any) -> None:
        """Fail at once a task whose profile no GPU of the pool can hold."""
        if task.partition is None:
            return
        found = False
        for i, m in self.models.items():
            try:
                p = m.profile(task.partition)
            except MigpoolError:
                continue
            if max_addable(m, p, []) >= 1:
                found = True
        if not found:
            first = next(iter(self.models.values()))
            try:
                p = first.profile(task.partition)
                why = explain(first, [p], [])
            except MigpoolError as e:
                why = str(e)
            raise PluginError(f"no GPU of this pool can ever hold a {task.partition} partition: {why}")

    def resolve(self, min_memory: str) -> str:
        return profile_for_memory(list(self.models.values()), min_memory)

    def wake(self) -> None:
        self._wake.set()

    # --- the loop ---
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            try:
                self.step()
                failures = 0
            except Exception as e:  # noqa: BLE001 - retried; three in a row fail the tasks that wait on it
                failures += 1
                log.warning("dynamic MIG: %s", e)
                self.error = e
                if failures >= 3:
                    self._fail_waiting(e)
                    failures = 0

    def _fail_waiting(self, e: BaseException) -> None:
        with self.sched.lock:
            doomed = [j for j in self.sched.pending if not any(w.serves(j.task) for w in self.sched.workers)]
            for j in doomed:
                self.sched.pending.remove(j)
        for j in doomed:
            if not j.future.done():
                j.future.set_exception(PluginError(f"dynamic MIG could not make a partition for {j.task!r}: {e}"))

    def step(self) -> None:
        now = time.monotonic()
        with self.sched.lock:
            pending = list(self.sched.pending)
            for s in self.slots:
                idle = not s.worker.outstanding and s.worker.ready.is_set()
                s.idle_since = (s.idle_since or now) if idle else None
        waiting: dict[str, list[Any]] = {}
        anything = []
        for j in pending:
            if j.task.partition is None:
                anything.append(j)
            else:
                waiting.setdefault(j.task.partition, []).append(j)
        if self.reserved and not any(j.id == self.reserved[2] for js in waiting.values() for j in js):
            self.reserved = None  # its task got a partition (or was cancelled)
        for profile, jobs in sorted(waiting.items(), key=lambda kv: kv[1][0].id):  # oldest waiting first
            supply = [s for s in self.slots if s.instance.profile.name == profile and not s.worker.draining
                      and (s.idle_since is not None or not s.worker.ready.is_set())]
            for _ in range(len(jobs) - len(supply)):  # one partition per task that nothing will take soon
                if not self._provide(profile, jobs[0],
                                     busy_ok=any(s.instance.profile.name == profile for s in self.slots)):
                    break
        if anything and not self.slots:
            smallest = min(self.models[self.gpus[0]].profiles, key=lambda p: (p.slices, p.memory_mib))
            self._provide(smallest.name, anything[0], busy_ok=False)
        self._drain_reserved()
        for s in list(self.slots):
            if (s.idle_since is not None and now - s.idle_since >= self.keep_idle
                    and s.instance.profile.name not in waiting and not anything):
                self._destroy([s], f"idle for {self.keep_idle:g} s")

    # --- decisions ---
    def _instances(self, gpu: int) -> list[PlannedInstance]:
        return self.foreign[gpu] + [s.instance for s in self.slots if s.gpu == gpu]

    def _room_after(self, m: GpuModel, placed: list[PlannedInstance]) -> tuple[int, ...]:
        """How much still fits, largest profiles first (higher is better)."""
        order = sorted((p for p in m.profiles if not p.name.endswith("+me")), key=lambda p: (-p.slices, -p.memory_mib))
        return tuple(max_addable(m, p, placed) for p in order)

    def _best_placement(self, gpu: int, profile: Profile, placed: list[PlannedInstance]) -> PlannedInstance | None:
        m = self.models[gpu]
        best = None
        for pl in profile.placements:
            cand = PlannedInstance(profile, pl)
            if can_place(m, placed, profile, pl):
                score = self._room_after(m, placed + [cand])
                if best is None or score > best[0]:
                    best = (score, cand)
        return best[1] if best else None

    def _provide(self, name: str, job: Any, busy_ok: bool) -> bool:
        """One more partition of profile `name`, for `job` (the oldest task waiting for it); True if made."""
        options = []
        for gpu in self.gpus:
            if self.reserved and self.reserved[0] == gpu and self.reserved[2] != job.id:
                continue
            m = self.models[gpu]
            try:
                p = m.profile(name)
            except MigpoolError:
                continue
            placed = self._instances(gpu)
            inst = self._best_placement(gpu, p, placed)
            if inst is not None:
                options.append(((0, self._room_after(m, placed + [inst])), gpu, [], inst))
                continue
            idle = [s for s in self.slots if s.gpu == gpu and s.idle_since is not None and not s.worker.draining]
            for k in range(1, len(idle) + 1):
                found = []
                for gone in combinations(idle, k):
                    rest = [i for i in placed if all(i is not s.instance for s in gone)]  # noqa: B023
                    inst = self._best_placement(gpu, p, rest)
                    if inst is not None:
                        found.append(((-k, self._room_after(m, rest + [inst])), gpu, list(gone), inst))
                if found:
                    options.append(max(found, key=lambda o: o[0]))
                    break
        if options:
            _, gpu, gone, inst = max(options, key=lambda o: o[0])
            if gone and len(self._destroy(gone, f"room for a {name} partition that a task waits for")) < len(gone):
                return False  # one of them took a task meanwhile (it is kept): decide again next time
            self._create(gpu, inst, f"a task waits for {name}" if not gone else f"a task waits for {name} (after freeing idle ones)")
            return True
        if not busy_ok and self.reserved is None:  # else its own workers will take it, or another task holds it
            self._reserve(name, job)
        return False

    def _reserve(self, name: str, job: Any) -> None:
        """Hold the GPU where the fewest busy partitions stand in the way, until `job`'s partition fits."""
        best = None
        for gpu in self.gpus:
            m = self.models[gpu]
            try:
                p = m.profile(name)
            except MigpoolError:
                continue
            mine = [s for s in self.slots if s.gpu == gpu]
            for k in range(0, len(mine) + 1):
                for gone in combinations(mine, k):
                    rest = self.foreign[gpu] + [s.instance for s in mine if s not in gone]
                    if self._best_placement(gpu, p, rest) is not None:
                        busy = sum(1 for s in gone if s.idle_since is None)
                        if best is None or (busy, k) < best[0]:
                            best = ((busy, k), gpu, list(gone))
                        break
        if best is None:
            return
        _, gpu, gone = best
        self.reserved = (gpu, name, job.id)
        with self.sched.lock:
            for s in gone:
                s.worker.draining = True
        self._note("reserve", gpu, name, None, f"the oldest waiting task needs {name}; "
                   f"{len(gone)} partition(s) in the way take no new task")

    def _drain_reserved(self) -> None:
        """Destroy the reserved GPU's draining partitions that have finished their work."""
        if self.reserved is None:
            return
        done = [s for s in self.slots if s.gpu == self.reserved[0] and s.worker.draining and not s.worker.outstanding]
        if done:
            self._destroy(done, f"making room for a waiting {self.reserved[1]} task")

    # --- changes ---
    def _create(self, gpu: int, inst: PlannedInstance, reason: str) -> None:
        devices = reconcile.change(self.backend, gpu, create=[inst])
        g = self.backend.gpu(gpu)
        d = devices[0]
        part = Partition(uuid=d.uuid, profile=d.profile_name, gpu_index=gpu, gpu_uuid=g.uuid, memory_mib=d.memory_mib,
                         gi_id=d.gi_id, ci_id=d.ci_id)
        spec = self.compute.worker_spec(next(self._ids), len(self.slots) + 1, part)
        w = self.sched.add_worker(spec)
        self.slots.append(Slot(gpu, inst, w))
        self.compute.worker_started(w)
        self._note("create", gpu, inst.profile.name, inst.placement, reason)

    def _destroy(self, slots: list[Slot], reason: str) -> list[Slot]:
        """Destroy these partitions, except any that took a task meanwhile; returns those destroyed."""
        by_gpu: dict[int, list[Slot]] = {}
        for s in slots:
            with self.sched.lock:
                if s.worker.outstanding:  # it took a task meanwhile: never destroy a busy partition
                    continue
                s.worker.draining = True
            self.sched.retire(s.worker)
            self.slots.remove(s)
            by_gpu.setdefault(s.gpu, []).append(s)
        for gpu, gone in by_gpu.items():
            want = {(s.instance.profile.name, s.instance.placement) for s in gone}
            actual = [a for a in reconcile.actual_instances(self.backend, gpu)
                      if (a.instance.profile.name, a.instance.placement) in want]
            reconcile.change(self.backend, gpu, destroy=actual)
            for s in gone:
                self._note("destroy", gpu, s.instance.profile.name, s.instance.placement, reason)
        return [s for gone in by_gpu.values() for s in gone]

    def _note(self, action: str, gpu: int, profile: str, placement: Any, reason: str) -> None:
        entry = dict(time=time.time(), action=action, gpu=gpu, profile=profile,
                     placement=str(placement) if placement is not None else None, reason=reason)
        self.changes.append(entry)
        log.info("%s %s on GPU %d%s: %s", action, profile, gpu, f" at {placement}" if placement else "", reason)

    # --- the pool's view ---
    def partitions(self) -> list[Partition]:
        return [s.worker.spec.partition for s in self.slots if s.worker.spec.partition is not None]

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)


def profile_for_memory(models: list[GpuModel], min_memory: str) -> str:
    """The smallest profile (by memory, then slices) of the pool's GPUs that has at least `min_memory`."""
    need = parse_memory_mib(min_memory)
    fits = [p for m in models for p in m.profiles if p.memory_mib >= need and not p.name.endswith("+me")]
    if not fits:
        biggest = max((p for m in models for p in m.profiles), key=lambda p: p.memory_mib)
        raise PluginError(f"min_memory={min_memory} is more than any partition of this pool holds "
                          f"(the largest: {biggest.name}, {biggest.memory_mib} MiB)")
    return min(fits, key=lambda p: (p.memory_mib, p.slices)).name
