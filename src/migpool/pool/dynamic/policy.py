"""Dynamic MIG's policy: what to make, free, reserve and drain for the tasks that wait, decided one step at a
time. It reads the pool through a view (view.py: the waiting tasks, the workers, the clock) and starts no thread
and no process: what it decides is carried out through its effects (effects.py; controller.SiteEffects in a
pool), so tests build the view from plain data and record the effects. The core below steps; its parts decide:
placement.py (where a partition goes), costs.py (rule 6), reservations.py (rule 4), resizing.py and moves.py
(rule 7).

Each step (the controller, controller.DynamicMig, runs one when work waits or a worker goes idle, and every 0.1 s):
  1. A task runs on an idle worker that serves it: of its profile (`partition=`), with at least its memory
     (`min_memory=`, the size ranked first for it), or any (a task that asks for nothing). A task that asks for
     memory (or nothing) waits instead for a busy partition of a faster size when, by the measured run times,
     it would finish there sooner by more than 10% (DynamicPolicy.hold).
  2. Each task that no idle or starting worker (nor partition being made) will take gets one partition made for
     it where the planner finds room, at the placement that leaves the most room for larger profiles. Its size:
     the task's profile; for a memory need (or none), the size learned from measured run times (sizing.py).
     Each node makes one partition at a time, on its own change thread: nodes side by side.
  3. If there is no room, idle partitions are destroyed to make it: the set that disturbs the fewest workers,
     then leaves the most room. A busy partition is never destroyed, nor an idle one an earlier task will take.
  4. No starvation: when the oldest waiting task cannot get its partition even so, and no worker of the pool
     can ever take it, its GPU is reserved for it: the partitions in the way take no new task and are destroyed
     as they finish (a checkpoint task there stops at its next checkpoint and resumes elsewhere), and nothing
     else is created in that GPU until the task's partition exists. A partition that an older task is about to
     run on is not taken from it. No reservation is made while a move is under way; one whose room was taken
     meanwhile (nothing drains, yet its partition does not fit) is released and made anew.
  5. A partition idle for `keep_idle` seconds, with no waiting task it could run, is destroyed.
  6. Sizes follow the load: the size ranked first minimizes the task's run time × (1 + what it takes × X), what
     it takes being the compute slices that a new partition of that size leaves unusable where it goes (takes():
     a 3g.20gb on an A100-40GB takes 3, as four 1g.5gb still fit beside it; a 4g.20gb takes 4),
     X = (tasks waiting behind it + KAPPA·u/(1−u)) / the pool's compute slices, u the share of those slices busy,
     plus the tasks expected to arrive while it runs. On an idle pool a task gets the size that runs it fastest;
     the more work waits or runs, the more a slice-second counts, down to the size that does the most per slice.
     A task that cannot move is ranked by its measured sizes only (nothing measured: the smallest first,
     sizing.py); a checkpoint task also by estimates (run time falling with the square root of the slices), since
     a wrong guess can be moved. An idle partition far too large for a task under load (against the sizes step 2
     would make for it) is left to be split, not taken. Where the oldest task's reservation (rule 4) drains a GPU,
     other tasks may use the room meanwhile: a checkpoint task (stopped at a checkpoint once nothing else is in
     the way), or a task whose measured run time ends before the partitions in the way.
  7. A checkpoint task (`@function(checkpoint=True)`) may move, to a partition on its own GPU or another: grown
     into a larger size when nothing waits and its remaining work (units left × seconds per unit: measured, else
     guessed by the square root of the slices) shrinks by MOVE_MARGIN after the move's measured cost; shrunk to
     a smaller size when the oldest waiting task cannot get a partition otherwise and its wait (the soonest a
     busy partition frees) is longer than what the shrink costs the moved task, or, where several tasks wait,
     when its rest costs less by MOVE_MARGIN on the smaller size by rule 6's cost (run time × (1 + the slices it
     takes × X)), the move's cost included, and the room it leaves takes one of the two sizes ranked first for
     some kind of waiting task (the oldest SHRINK_KINDS kinds). The task stops at its next checkpoint, its
     partition is destroyed, the new one made, and it resumes there from that checkpoint (or, should the new one
     fail, on any partition that serves it). One move at a time; at most MAX_MOVES per task. A task without
     checkpoints is never moved.
A profile that no GPU of the pool can hold fails its task at once, with the planner's explanation. Every change
goes through `reconcile.change` (apply's checks, the GPU's lock, journal and rollback) and is logged with its reason.
Workers take one task at a time (no prefetch), so that waiting tasks stay where this controller sees them.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from ...errors import MigpoolError, PluginError
from ...mig.catalog import GpuModel, profiles_holding, smallest_holding
from ...mig.layout import parse_memory_mib
from ...mig.planner import PlannedInstance, explain, max_addable
from ..api.info import Partition
from .costs import Costs
from .effects import Effects
from .fragments import repack_would_hold, wanted
from .moves import Moves
from .placement import Placement
from .reservations import Reservations
from .resizing import Resizing
from .sizing import RunTimes
from .state import Held, Made, Making
from .view import Gpu, GpuState, PoolView, WorkerView, serves_worker

log = logging.getLogger("migpool.dynamic")
CHANGES_KEPT = 10_000  # the most recent creates, destroys and reservations kept for `compute.changes`


class DynamicPolicy:
    """The stepping core of dynamic MIG: what it keeps (`held`: the partitions made and being made; `sizes`: the
    run times learned) and its parts: `placement` (where a partition goes), `costs` (rule 6), `reservations`
    (rule 4), `resizing` and `moves` (rule 7). It reads the pool through `view` only, and changes it through
    `effects` only."""

    def __init__(
        self,
        gpus: Sequence[GpuState],
        view: PoolView,
        effects: Effects,
        keep_idle: float,
        sizes: RunTimes | None = None,
    ) -> None:
        """`gpus`: each GPU with its model and the partitions that were there before the pool (never touched);
        `view`: the pool it reads (its lock, waiting jobs, workers, clock)."""
        self.view = view
        self.effects = effects
        self.keep_idle = keep_idle
        self.held = Held(list(gpus))
        self.sizes = sizes if sizes is not None else RunTimes()
        self.site_nodes = {g[0] for g in self.held.gpus}
        self.changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=CHANGES_KEPT)
        self.promised: dict[int, int] = {}  # this step: idle or starting workers (by id) -> the job that takes each
        self.placement = Placement(self.held)
        self.costs = Costs(self.held, self.placement, self.sizes, view)
        self.reservations = Reservations(self)
        self.resizing = Resizing(self)
        self.moves = Moves(self)
        self.placement_blocked = 0  # waits where destroying idle partitions would have made room (fragments.py)

    # what it holds, by the names its callers read
    @property
    def gpus(self) -> list[Gpu]:
        return self.held.gpus

    @property
    def models(self) -> dict[Gpu, GpuModel]:
        return self.held.models

    @property
    def slots(self) -> list[Made]:
        return self.held.slots

    @property
    def making(self) -> list[Making]:
        return self.held.making

    @property
    def stale(self) -> dict[Gpu, list[PlannedInstance]]:
        return self.held.stale

    # --- the scheduler's side (its threads, through the controller) ---
    def admit(self, task: Any) -> None:
        """Fail at once a task whose profile (or memory need) no GPU of the pool can ever hold, counting the
        partitions that were there before the pool (which it never touches). Counts the arrival (rule 6)."""
        self.costs.arrived.append(self.view.now())
        models, foreign = self.held.models, self.held.foreign
        if task.need_mib is not None:
            profile_for_memory(list(models.values()), task.min_memory)
            if not any(
                max_addable(m, p, foreign[g]) >= 1
                for g, m in models.items()
                for p in profiles_holding(m, task.need_mib)
            ):
                raise PluginError(
                    f"no GPU of this pool can ever hold a partition with min_memory={task.min_memory}: "
                    "the partitions made before the pool are in the way; remove them (migpool "
                    "teardown) or ask for less"
                )
        if task.partition is None:
            return
        why = ""
        for g, m in models.items():
            try:
                p = m.profile(task.partition)
            except MigpoolError as e:
                why = why or str(e)
                continue
            if max_addable(m, p, foreign[g]) >= 1:
                return
            why = explain(m, [p], foreign[g]) + (
                " (the partitions there were made before the pool)" if foreign[g] else ""
            )
        raise PluginError(f"no GPU of this pool can ever hold a {task.partition} partition: {why}")

    def fail_waiting(self, e: BaseException) -> None:
        """Fail the waiting tasks that no worker, nor partition being made, will ever take (the controller's
        steps keep failing with `e`)."""
        with self.view.lock:
            doomed = [j for j in self.view.pending if not any(self._serves(w, j.task) for w in self._takers())]
        self.effects.fail(
            [(j, PluginError(f"dynamic MIG could not make a partition for {j.task!r}: {e}")) for j in doomed]
        )

    def finished(self, job: Any, worker: WorkerView, seconds: float) -> None:
        """A task ended well on `worker`: its move, if any, is over; its run time is learned (costs.learn). A
        checkpoint task that said how far it was is timed per unit instead (progress), whatever its length."""
        self.moves.ended(job)
        self.costs.learn(job, worker, seconds)

    def progress(self, job: Any, worker: WorkerView, done: float | None, total: float | None, now: float) -> None:
        """A checkpoint task reached a checkpoint (a worker's reader thread): see moves.progress."""
        self.moves.progress(job, worker, done, now)

    def paused(self, job: Any, worker: WorkerView) -> None:
        """A task stopped at a checkpoint for a move (a worker's reader thread): the step makes its partition."""
        self.moves.paused(job, worker)

    def rank(self, job: Any, worker: WorkerView) -> int:
        """How much a task that asks for memory (or nothing) would rather run on this worker: 0 is best."""
        return self.costs.rank(job, worker)

    def hold(self, job: Any, idle: WorkerView, held: dict[int, float]) -> bool:
        """Whether `job` should wait rather than run on the idle worker: a task being moved waits for the
        partition made for it; a task asking for memory (or nothing) waits where that partition is far too large
        for it under the load (good_fit), or where it would finish sooner by more than TIE (sizing.py) on a busy
        partition of a faster size (costs.sooner_elsewhere; `held` counts the jobs already waiting for each)."""
        waits = self.moves.waits(job, idle)
        if waits is not None:
            return waits
        if job.task.partition is not None or idle.spec.partition is None:
            return False
        pending = len(self.view.pending)
        if pending >= 2 and not self.good_fit(job, idle, pending - 1):
            return True  # too large for it under this load: the policy makes it a better size
        return self.costs.sooner_elsewhere(job, idle, held)

    def good_fit(self, job: Any, worker: WorkerView, behind: int) -> bool:
        """Whether the idle `worker`'s partition suits `job` under the load (costs.good_fit)."""
        return self.costs.good_fit(job, worker, behind)

    # --- a step ---
    def step(self) -> None:
        if self.held.stale:
            self._destroy_stale()
        self.made()
        now = self.view.now()
        self.moves.follow(now)
        with self.view.lock:
            pending = list(self.view.pending)
            for s in self.held.slots:
                idle = not s.worker.outstanding and s.worker.ready.is_set()
                s.idle_since = (now if s.idle_since is None else s.idle_since) if idle else None
            soon: list[Any] = [
                w
                for w in self.view.workers
                if not w.draining and not w.dead_reason and (not w.ready.is_set() or not w.outstanding)
            ] + self.held.making
        waiting = []  # tasks that no idle or starting worker will take
        self.promised = {}
        for j in pending:
            w = min(
                (
                    w
                    for w in soon
                    if self._serves(w, j.task)
                    and (isinstance(w, Making) or not w.ready.is_set() or self._suits(j, w, len(pending) - 1))
                ),
                default=None,
                key=_memory,
            )
            if w is not None:
                soon.remove(w)
                self.promised[id(w)] = j.id
            else:
                waiting.append(j)
        self.reservations.still_waits(pending)
        stuck: dict[tuple[Any, ...], Any] = {}  # per kind of task, the oldest waiting one that got no partition
        for j in waiting:  # oldest first: one partition for each
            key = (j.task.partition, j.task.need_mib, j.fid)
            if key not in stuck and not self.provide(j, behind=len(pending) - 1):
                stuck[key] = j
        for j in stuck.values():
            size = wanted(self, j, len(pending) - 1)
            if size is not None and repack_would_hold(self, j, size):
                self.placement_blocked += 1  # capacity existed, but the placements left did not take it
        self.reservations.drain()
        self.resizing.step()
        unserved = list(stuck.values())
        self.moves.plan(now, unserved[0] if unserved else None, bool(pending), len(waiting), unserved)
        expired = [
            s
            for s in self.held.slots
            if s.idle_since is not None
            and now - s.idle_since >= self.keep_idle
            and id(s.worker) not in self.promised
            and not any(serves_worker(self.view, s.worker, j.task) for j in waiting)
        ]
        if expired:
            self.destroy(expired, f"idle for {self.keep_idle:g} s")

    def _takers(self) -> list[Any]:
        return [*self.view.workers, *self.held.making]

    def _serves(self, w: WorkerView | Making, task: Any) -> bool:
        """Whether a worker, or the partition being made (Making), may run `task`."""
        if isinstance(w, Making):
            p = w.instance.profile
            return self.view.serves(task, w.gpu[0], p.name, p.memory_mib)
        return serves_worker(self.view, w, task)

    def _suits(self, job: Any, w: WorkerView, behind: int) -> bool:
        return len(self.view.pending) < 2 or self.good_fit(job, w, behind)

    def fits(self, gpu: Gpu, name: str, job: Any, free_idle: bool) -> tuple[Any, ...] | None:
        """Where a `name` partition goes on `gpu`: (score, gpu, idle slots to destroy, instance), or None."""
        if not self.reservations.allows(gpu, job, name):
            return None
        m = self.held.models[gpu]
        try:
            p = m.profile(name)
        except MigpoolError:
            return None
        place = self.placement
        placed = self.held.instances(gpu)
        if not free_idle:
            inst = place.best(gpu, p, placed)
            return None if inst is None else ((0, place.room_after(m, placed + [inst])), gpu, [], inst)
        idle = [
            s
            for s in self.held.slots
            if s.gpu == gpu and s.idle_since is not None and not s.worker.draining and id(s.worker) not in self.promised
        ]  # one that an earlier waiting task will take is kept for it
        if any(s.instance.profile.name == name for s in idle):
            return None  # the task passed over an idle one of that size: destroying it to make another gains nothing
        for k in range(1, len(idle) + 1):
            found = []
            for gone in combinations(idle, k):
                rest = [i for i in placed if all(i is not s.instance for s in gone)]
                inst = place.best(gpu, p, rest)
                if inst is not None:
                    found.append(((-k, place.room_after(m, rest + [inst])), gpu, list(gone), inst))
            if found:
                return max(found, key=lambda o: o[0])
        return None

    def provide(self, job: Any, behind: int = 0) -> bool:
        """One more partition for `job` (the oldest task that waits for one of its kind); True if made.
        Tried in turn: the size being explored where it fits as things are and still leaves room for the size
        ranked first (trying a size never takes the room that the best known one would use), then the ranked
        sizes where they fit as things are, then the ranked sizes after destroying idle partitions; where none
        fits, its smallest size is reserved (rule 4: draining the fewest partitions). `behind`: how many other
        tasks wait (the load, rule 6)."""
        held = self.held
        choice = self.costs.loaded(job, self.costs.choice(job), behind)
        tried = {s.instance.profile.name for s in held.slots} | {m.instance.profile.name for m in held.making}
        explore = choice.explore if choice.explore is not None and choice.explore.name not in tried else None
        tries = [(explore.name, False)] if explore is not None else []
        tries += [(p.name, False) for p in choice.ranked] + [(p.name, True) for p in choice.ranked]
        changing = {m.gpu[0] for m in held.making}  # nodes with a create under way: one at a time per node
        for name, free_idle in tries:
            options = [o for gpu in held.gpus if (o := self.fits(gpu, name, job, free_idle)) is not None]
            if choice.explore is not None and name == choice.explore.name and not free_idle and choice.ranked:
                options = [o for o in options if self.placement.leaves_room(o[1], o[3], choice.ranked[0].name)]
            if not options:
                continue
            options = [o for o in options if o[1][0] not in changing]
            if not options:  # it fits where a create is under way: decided once that one is done, with what it taught
                return False
            _, gpu, gone, inst = max(options, key=lambda o: o[0])
            if gone and len(self.destroy(gone, f"room for a {name} partition that a task waits for")) < len(gone):
                return False  # one of them took a task meanwhile (it is kept): decide again next time
            why = f"{job.task!r} waits" + (" (after freeing idle ones)" if gone else "")
            why += self.reservations.made_for(gpu, job, inst)
            self.create(
                gpu,
                inst,
                why
                + (
                    " (trying a larger size)"
                    if choice.explore and name == choice.explore.name and not free_idle
                    else ""
                ),
                key=None if job.task.partition is not None else self.costs.key(job),
                holds=inst.profile.memory_mib if job.task.partition is not None else job.task.need_mib or 0.0,
            )
            return True
        if (
            choice.ranked
            and self.reservations.reserved is None
            and not self.moves.active  # a move changes the layout under way: reserved once it is done
            and not any(self._serves(w, job.task) for w in held.making)
            and not any(self._serves(w, job.task) and not w.draining for w in self.view.workers)
        ):
            least = min(choice.ranked, key=self.placement.footprint)  # the size that drains the least
            self.reservations.reserve(least.name, job)  # else its own workers will take it, or another task holds it
        return False

    # --- changes, through the effects ---
    def create(self, gpu: Gpu, inst: PlannedInstance, reason: str, key: Any = None, holds: float = 0.0) -> None:
        """Start making `inst` on its node's change thread: one node's changes run in order, different nodes'
        side by side (on one machine the driver makes GPU instances one at a time anyway), and the controller
        goes on deciding meanwhile. It counts as made from now on (held.instances); its worker starts in made()."""
        self.held.making.append(Making(gpu, inst, self.effects.make(gpu, inst), reason, key, holds))
        self.held.changed += 1

    def made(self) -> None:
        """Start the workers of the partitions made since the last step. A create that failed (rolled back by
        reconcile.change) is dropped, and its error raised once the others are done."""
        held = self.held
        error: BaseException | None = None
        for m in [m for m in held.making if m.done.done()]:
            held.making.remove(m)
            held.changed += 1
            try:
                part = m.done.result()[0]
            except Exception as e:  # noqa: BLE001 - raised below: the loop counts it, and tries again
                error = error or e
                continue
            held.slots.append(Made(m.gpu, m.instance, self.effects.start_worker(part), key=m.key, holds=m.holds))
            self.note("create", m.gpu, m.instance.profile.name, m.instance.placement, m.reason)
        if error is not None:
            raise error

    def destroy(self, slots: list[Made], reason: str) -> list[Made]:
        """Destroy these partitions, except any that took a task meanwhile; returns those destroyed."""
        held = self.held
        by_gpu: dict[Gpu, list[Made]] = {}
        for s in slots:
            with self.view.lock:
                if s.worker.outstanding:  # it took a task meanwhile: never destroy a busy partition
                    continue
                self.effects.drain([s.worker])
            self.effects.retire(s.worker)
            held.slots.remove(s)
            held.changed += 1
            by_gpu.setdefault(s.gpu, []).append(s)
        error: Exception | None = None
        for gpu, gone in by_gpu.items():  # every GPU's, even after one failed: their workers are retired already
            try:
                self.effects.unmake(
                    gpu, [s.instance for s in gone], [s.worker.stats.pid for s in gone if s.worker.stats.pid]
                )
            except Exception as e:  # noqa: BLE001 - raised below, once every GPU was tried
                held.stale.setdefault(gpu, []).extend(s.instance for s in gone)  # in the way until destroyed
                error = error or e
                continue
            for s in gone:
                self.note("destroy", gpu, s.instance.profile.name, s.instance.placement, reason)
        if error is not None:
            raise error
        return [s for gone in by_gpu.values() for s in gone]

    def _destroy_stale(self) -> None:
        """Try again to destroy partitions whose destruction failed (their workers are gone)."""
        held = self.held
        for gpu, insts in list(held.stale.items()):
            self.effects.unmake(gpu, insts, [])
            del held.stale[gpu]
            held.changed += 1
            for i in insts:
                self.note("destroy", gpu, i.profile.name, i.placement, "retried")

    def note(self, action: str, gpu: Gpu, profile: str, placement: Any, reason: str) -> None:
        """Keep a change for `compute.changes`, and log it with its reason."""
        entry = dict(
            time=time.time(),
            action=action,
            node=gpu[0],
            gpu=gpu[1],
            profile=profile,
            placement=str(placement) if placement is not None else None,
            reason=reason,
        )
        self.changes.append(entry)
        where = f"GPU {gpu[1]}" + (f" of node {gpu[0]}" if len(self.site_nodes) > 1 else "")
        log.info("%s %s on %s%s: %s", action, profile, where, f" at {placement}" if placement else "", reason)

    def partitions(self) -> list[Partition]:
        return [s.worker.spec.partition for s in self.held.slots if s.worker.spec.partition is not None]


def _memory(w: Any) -> float:
    """The memory of a worker's partition, or of a partition being made (Making): the smallest serves first."""
    if isinstance(w, Making):
        return w.instance.profile.memory_mib
    return w.spec.partition.memory_mib if w.spec.partition else 0


def profile_for_memory(models: list[GpuModel], min_memory: str) -> str:
    """The smallest profile (by memory, then slices) of the pool's GPUs that has at least `min_memory`."""
    best = smallest_holding(models, parse_memory_mib(min_memory))
    if best is None:
        biggest = max((p for m in models for p in m.profiles), key=lambda p: p.memory_mib)
        raise PluginError(
            f"min_memory={min_memory} is more than any partition of this pool holds "
            f"(the largest: {biggest.name}, {biggest.memory_mib} MiB)"
        )
    return best.name
