"""Dynamic MIG's policy: what to make, free, reserve and drain for the tasks that wait, decided one step at a
time from the pool's state and a clock. It starts no thread and no process: what it decides is carried out
through `Effects` (dynamic.SiteEffects: the site's change threads, the scheduler's retire), so tests drive it
with a fake clock and recorded effects.

Each step (the controller, dynamic.DynamicMig, runs one when work waits or a worker goes idle, and every 0.1 s):
  1. A task runs on an idle worker that serves it: of its profile (`partition=`), with at least its memory
     (`min_memory=`, the size ranked first for it), or any (a task that asks for nothing). A task that asks for
     memory (or nothing) waits instead for a busy partition of a faster size when, by the measured run times,
     it would finish there sooner by more than 10% (DynamicPolicy.hold).
  2. Each task that no idle or starting worker (nor partition being made) will take gets one partition made for
     it where the planner finds room, at the placement that leaves the most room for larger profiles. Its size:
     the task's profile; for a memory need (or none), the size learned from measured run times (pool/sizing.py).
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
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Protocol

from ...errors import MigpoolError, PluginError
from ...mig.catalog import GpuModel, Profile
from ...mig.layout import parse_memory_mib
from ...mig.planner import PlannedInstance, can_place, explain, max_addable
from ..api.info import Partition
from ..scheduler.core import Scheduler, WorkerProcess, serves
from .site import Gpu, GpuState
from .sizing import TIE, Choice, Key, RunTimes, function_name

log = logging.getLogger("migpool.dynamic")
CHANGES_KEPT = 10_000  # the most recent creates, destroys and reservations kept for `compute.changes`
KAPPA = 2.0  # the load term's weight of the pool's busy share (rule 6)
MOVE_MARGIN = 0.15  # a grow must cut the task's remaining time by this share, its cost included (rule 7)
MAX_MOVES = 4  # moves of one task, at most
MOVE_GUESS = 3.0  # a move is taken to cost this many of the task's checkpoint intervals until one is measured
ARRIVALS_KEPT = 32  # the arrival rate is taken over the last this many tasks
SHRINK_KINDS = 8  # a shrink under load looks for room for this many kinds of waiting task, oldest first
TARGET_WAIT_S = 120.0  # how long a moved task waits for the partition made for it before any other may take it


@dataclass
class Slot:
    """A partition the pool made, and its worker."""

    gpu: Gpu
    instance: PlannedInstance
    worker: WorkerProcess
    idle_since: float | None = None
    key: Key | None = None  # the sizing group of the last task it ran (pool/sizing.py)
    holds: float = 0.0  # the memory (MiB) that the tasks it was made for need: it is never resized to less


@dataclass
class Making:
    """A partition being made, on its node's change thread; its worker starts once it exists."""

    gpu: Gpu
    instance: PlannedInstance
    done: Future[list[Partition]]
    reason: str
    key: Key | None
    holds: float

    def serves(self, task: Any) -> bool:
        return serves(task, self.gpu[0], self.instance.profile.name, self.instance.profile.memory_mib)


@dataclass
class Move:
    """A checkpoint task asked to stop at its next checkpoint, to resume on a `profile` partition of `gpu`."""

    job: Any
    slot: Slot
    gpu: Gpu
    profile: Profile
    asked: float
    done: float
    why: str
    clear: list[Slot] = field(default_factory=list)  # idle partitions in the target's way, kept from other tasks
    target: Making | Slot | None = None  # once it stopped: the partition made for it
    since: float = 0.0  # when it stopped
    state: str = "asked"  # asked, stopped, then resumed; or ended (before it reached a checkpoint)


class Effects(Protocol):
    """How the policy's decisions are carried out (dynamic.SiteEffects in a pool; a recorder in tests)."""

    def make(self, gpu: Gpu, inst: PlannedInstance) -> Future[list[Partition]]:
        """Start making `inst` (each node's in order, nodes side by side); its future ends with the partition."""
        ...

    def unmake(self, gpu: Gpu, instances: list[PlannedInstance], pids: Sequence[int]) -> None:
        """Destroy these instances now, once the processes `pids` (their retired workers) have ended."""
        ...

    def retire(self, worker: WorkerProcess) -> None:
        """Stop an idle worker for good and wait for its process to end."""
        ...

    def start_worker(self, part: Partition) -> WorkerProcess:
        """Start a worker pinned to a partition just made."""
        ...


class DynamicPolicy:
    """The decisions of dynamic MIG and what it keeps to make them: the partitions it made (`slots`), those
    being made (`making`), reservations, resizes and the run times learned (`sizes`)."""

    def __init__(
        self,
        gpus: Sequence[GpuState],
        sched: Scheduler,
        effects: Effects,
        keep_idle: float,
        sizes: RunTimes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`gpus`: each GPU with its model and the partitions that were there before the pool (never touched);
        `sched`: the queue it reads (its lock, pending jobs, workers); `clock`: monotonic seconds."""
        self.sched = sched
        self.effects = effects
        self.clock = clock
        self.gpus = [g for g, _, _ in gpus]
        self.models = {g: m for g, m, _ in gpus}
        self.foreign = {g: list(f) for g, _, f in gpus}
        self.slice_counts = sorted({p.slices for m in self.models.values() for p in m.profiles}, reverse=True)
        self.site_nodes = {g[0] for g in self.gpus}
        self.stale: dict[Gpu, list[PlannedInstance]] = {}  # destroys that failed: still in the way, tried again
        self.making: list[Making] = []  # creates under way: counted as made, their workers start when done
        self.keep_idle = keep_idle
        self.slots: list[Slot] = []
        self.changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=CHANGES_KEPT)
        self.reserved: tuple[Gpu, str, int] | None = None  # (GPU, profile, job id) held for a waiting task
        self.backfill: set[int] = set()  # ids of the instances made on a reserved GPU for other tasks (rule 4)
        self.sizes = sizes if sizes is not None else RunTimes()
        self._named: set[int] = set()
        self.resizing: dict[Gpu, tuple[list[Slot], str]] = {}  # per GPU: partitions draining to make a better size
        self._warm: set[tuple[int, int]] = set()  # (worker, function) pairs that ran once: later runs are timed
        self.promised: dict[int, int] = {}  # this step: idle or starting workers (by id) -> the job that takes each
        self.moves: dict[int, Move] = {}  # checkpoint tasks being moved, by job id (asked, stopped, resuming)
        self.marks: dict[int, tuple[float, float, str, int, float]] = {}  # job id -> (done, when, profile, worker
        # id, units since the checkpoint before)
        self._stopped: collections.deque[Any] = collections.deque()  # jobs that stopped for a move (reader threads)
        self._mark_lock = threading.Lock()
        self.capacity = sum(m.compute_slices for m in self.models.values())
        self.arrived: collections.deque[float] = collections.deque(maxlen=ARRIVALS_KEPT)  # when tasks came
        self.mean_run = 0.0  # the moving average of tasks' run times: the run time of a task not measured yet
        self._footprints: dict[str, float] = {}
        self._takes: dict[str, float] = {}  # what a new partition takes (takes()) in the layout `_takes_at`
        self._changed = 0  # counts the creates and destroys: a new layout for takes()
        self._takes_at = 0

    def admit(self, task: Any) -> None:
        """Fail at once a task whose profile (or memory need) no GPU of the pool can ever hold, counting the
        partitions that were there before the pool (which it never touches). Counts the arrival (rule 6)."""
        self.arrived.append(self.clock())
        if task.need_mib is not None:
            profile_for_memory(list(self.models.values()), task.min_memory)
            key = (0, task.need_mib)
            if not any(
                max_addable(m, p, self.foreign[g]) >= 1 for g, m in self.models.items() for p in _holding(m, key)
            ):
                raise PluginError(
                    f"no GPU of this pool can ever hold a partition with min_memory={task.min_memory}: "
                    "the partitions made before the pool are in the way; remove them (migpool "
                    "teardown) or ask for less"
                )
        if task.partition is None:
            return
        why = ""
        for g, m in self.models.items():
            try:
                p = m.profile(task.partition)
            except MigpoolError as e:
                why = why or str(e)
                continue
            if max_addable(m, p, self.foreign[g]) >= 1:
                return
            why = explain(m, [p], self.foreign[g]) + (
                " (the partitions there were made before the pool)" if self.foreign[g] else ""
            )
        raise PluginError(f"no GPU of this pool can ever hold a {task.partition} partition: {why}")

    def fail_waiting(self, e: BaseException) -> None:
        with self.sched.lock:
            takers: list[WorkerProcess | Making] = [*self.sched.workers, *self.making]
            doomed = [j for j in self.sched.pending if not any(w.serves(j.task) for w in takers)]
            for j in doomed:
                self.sched.pending.remove(j)
        for j in doomed:
            if not j.future.done():
                j.future.set_exception(PluginError(f"dynamic MIG could not make a partition for {j.task!r}: {e}"))

    def finished(self, job: Any, worker: WorkerProcess, seconds: float) -> None:
        """A task ended well on `worker`: learn its run time (a worker's first run of a function, which may pay
        for loading it, only as an upper bound). A checkpoint task that said how far it was is timed per unit
        instead (progress), whatever its length. A move of it is over: it ended before it stopped (its partition
        takes tasks again), or on its new partition before a checkpoint there (a move left "stopped" stood until
        TARGET_WAIT_S)."""
        with self._mark_lock:
            self.marks.pop(job.id, None)
        move = self.moves.get(job.id)
        if move is not None and move.state in ("asked", "stopped"):  # the controller's step drops it
            move.state = "ended"
        p = worker.spec.partition
        if p is None or job.task.partition is not None:
            return
        key = self._key(job)
        for s in list(self.slots):
            if s.worker is worker:
                s.key = key
        first = (id(worker), job.fid) not in self._warm
        self._warm.add((id(worker), job.fid))
        self.mean_run = seconds if not self.mean_run else 0.8 * self.mean_run + 0.2 * seconds
        if job.progress is not None and job.progress[0] is not None:
            return  # timed per unit of its work (progress)
        self.sizes.add(key, p.profile, seconds, first=first)

    def progress(self, job: Any, worker: WorkerProcess, done: float | None, total: float | None, now: float) -> None:
        """A checkpoint task reached a checkpoint (a worker's reader thread): learn its size's seconds per unit
        from the time since its last one on the same worker (not from its first after it started: that one pays
        for starting), and what its move cost when this is its first on the partition it moved to."""
        p = worker.spec.partition
        if p is None or job.task.partition is not None or done is None:
            return
        key = self._key(job)
        with self._mark_lock:
            last = self.marks.get(job.id)
            same = last is not None and last[2] == p.profile and last[3] == id(worker) and done > last[0]
            step = done - last[0] if same and last is not None else (last[4] if last is not None else 0.0)
            self.marks[job.id] = (done, now, p.profile, id(worker), step)
        if same and last is not None:
            self.sizes.add_unit(key, p.profile, (now - last[1]) / (done - last[0]))
        move = self.moves.get(job.id)
        if move is not None and isinstance(move.target, Slot) and move.target.worker is worker:
            unit = self.sizes.per_unit(key).get(p.profile, 0.0)
            self.sizes.add_move(key, max(0.0, now - move.asked - (done - move.done) * unit))
            move.state = "resumed"  # the step forgets the move

    def paused(self, job: Any, worker: WorkerProcess) -> None:
        """A task stopped at a checkpoint for a move (a worker's reader thread): the step makes its partition."""
        self._stopped.append((job, worker))

    def step(self) -> None:
        if self.stale:
            self._destroy_stale()
        self.made()
        now = self.clock()
        self._follow_moves(now)
        with self.sched.lock:
            pending = list(self.sched.pending)
            for s in self.slots:
                idle = not s.worker.outstanding and s.worker.ready.is_set()
                s.idle_since = (now if s.idle_since is None else s.idle_since) if idle else None
            soon: list[Any] = [
                w
                for w in self.sched.workers
                if not w.draining and not w.dead_reason and (not w.ready.is_set() or not w.outstanding)
            ] + self.making
        waiting = []  # tasks that no idle or starting worker will take
        self.promised = {}
        for j in pending:
            w = min(
                (
                    w
                    for w in soon
                    if w.serves(j.task)
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
        if self.reserved and not any(j.id == self.reserved[2] for j in pending):
            self.reserved = None  # its task got a partition (or was cancelled)
            self._end_backfill()
        stuck: dict[tuple[Any, ...], Any] = {}  # per kind of task, the oldest waiting one that got no partition
        for j in waiting:  # oldest first: one partition for each
            key = (j.task.partition, j.task.need_mib, j.fid)
            if key not in stuck and not self.provide(j, behind=len(pending) - 1):
                stuck[key] = j
        self.drain_reserved()
        self.resize()
        unserved = list(stuck.values())
        self.plan_moves(now, unserved[0] if unserved else None, bool(pending), len(waiting), unserved)
        expired = [
            s
            for s in self.slots
            if s.idle_since is not None
            and now - s.idle_since >= self.keep_idle
            and id(s.worker) not in self.promised
            and not any(s.worker.serves(j.task) for j in waiting)
        ]
        if expired:
            self.destroy(expired, f"idle for {self.keep_idle:g} s")

    def _instances(self, gpu: Gpu) -> list[PlannedInstance]:
        return (
            self.foreign[gpu]
            + self.stale.get(gpu, [])
            + [s.instance for s in self.slots if s.gpu == gpu]
            + [m.instance for m in self.making if m.gpu == gpu]
        )

    def _room_after(self, m: GpuModel, placed: list[PlannedInstance]) -> tuple[int, ...]:
        """How many more partitions of each size (compute slices, largest first) still fit: higher is better.
        Counted by size, not by profile, so that GPUs of different models compare like for like."""
        most: dict[int, int] = {}
        for p in m.profiles:
            if p.plain:
                most[p.slices] = max(most.get(p.slices, 0), max_addable(m, p, placed))
        return tuple(most.get(k, 0) for k in self.slice_counts)

    def _best_placement(self, gpu: Gpu, profile: Profile, placed: list[PlannedInstance]) -> PlannedInstance | None:
        m = self.models[gpu]
        best = None
        for pl in profile.placements:
            cand = PlannedInstance(profile, pl)
            if can_place(m, placed, profile, pl):
                score = self._room_after(m, placed + [cand])
                if best is None or score > best[0]:
                    best = (score, cand)
        return best[1] if best else None

    def choice(self, job: Any) -> Choice:
        """The profiles to make for `job`: its own, or for a memory need (or none) the sizes learned so far."""
        if job.task.partition is not None:
            own = {p.name: p for m in self.models.values() for p in m.profiles if p.name == job.task.partition}
            return Choice(None, tuple(own.values()))
        key = self._key(job)
        return self.sizes.choose(
            key, list({p.name: p for m in self.models.values() for p in _holding(m, key)}.values())
        )

    def fits(self, gpu: Gpu, name: str, job: Any, free_idle: bool) -> tuple[Any, ...] | None:
        """Where a `name` partition goes on `gpu`: (score, gpu, idle slots to destroy, instance), or None."""
        if self.reserved and self.reserved[0] == gpu and self.reserved[2] != job.id and not self._backfills(job, name):
            return None
        m = self.models[gpu]
        try:
            p = m.profile(name)
        except MigpoolError:
            return None
        placed = self._instances(gpu)
        if not free_idle:
            inst = self._best_placement(gpu, p, placed)
            return None if inst is None else ((0, self._room_after(m, placed + [inst])), gpu, [], inst)
        idle = [
            s
            for s in self.slots
            if s.gpu == gpu and s.idle_since is not None and not s.worker.draining and id(s.worker) not in self.promised
        ]  # one that an earlier waiting task will take is kept for it
        if any(s.instance.profile.name == name for s in idle):
            return None  # the task passed over an idle one of that size: destroying it to make another gains nothing
        for k in range(1, len(idle) + 1):
            found = []
            for gone in combinations(idle, k):
                rest = [i for i in placed if all(i is not s.instance for s in gone)]
                inst = self._best_placement(gpu, p, rest)
                if inst is not None:
                    found.append(((-k, self._room_after(m, rest + [inst])), gpu, list(gone), inst))
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
        choice = self.loaded(job, self.choice(job), behind)
        tried = {s.instance.profile.name for s in self.slots} | {m.instance.profile.name for m in self.making}
        explore = choice.explore if choice.explore is not None and choice.explore.name not in tried else None
        tries = [(explore.name, False)] if explore is not None else []
        tries += [(p.name, False) for p in choice.ranked] + [(p.name, True) for p in choice.ranked]
        changing = {m.gpu[0] for m in self.making}  # nodes with a create under way: one at a time per node
        for name, free_idle in tries:
            options = [o for gpu in self.gpus if (o := self.fits(gpu, name, job, free_idle)) is not None]
            if choice.explore is not None and name == choice.explore.name and not free_idle and choice.ranked:
                options = [o for o in options if self._leaves_room(o[1], o[3], choice.ranked[0].name)]
            if not options:
                continue
            options = [o for o in options if o[1][0] not in changing]
            if not options:  # it fits where a create is under way: decided once that one is done, with what it taught
                return False
            _, gpu, gone, inst = max(options, key=lambda o: o[0])
            if gone and len(self.destroy(gone, f"room for a {name} partition that a task waits for")) < len(gone):
                return False  # one of them took a task meanwhile (it is kept): decide again next time
            why = f"{job.task!r} waits" + (" (after freeing idle ones)" if gone else "")
            if self.reserved and self.reserved[0] == gpu and self.reserved[2] != job.id:
                self.backfill.add(id(inst))
                why += f" (meanwhile on a GPU held for a {self.reserved[1]} task)"
            self.create(
                gpu,
                inst,
                why
                + (
                    " (trying a larger size)"
                    if choice.explore and name == choice.explore.name and not free_idle
                    else ""
                ),
                key=None if job.task.partition is not None else self._key(job),
                holds=inst.profile.memory_mib if job.task.partition is not None else job.task.need_mib or 0.0,
            )
            return True
        if (
            choice.ranked
            and self.reserved is None
            and not self.moves  # a move changes the layout under way: reserved once it is done
            and not any(w.serves(job.task) for w in self.making)
            and not any(w.serves(job.task) and not w.draining for w in self.sched.workers)
        ):
            least = min(choice.ranked, key=self.footprint)  # the size that drains the least
            self.reserve(least.name, job)  # else its own workers will take it, or another task holds it
        return False

    def busy_share(self) -> float:
        """The share of the pool's compute slices that partitions running a task hold."""
        busy = sum(self.footprint(s.instance.profile) for s in self.slots if s.worker.outstanding)
        return min(busy / self.capacity, 1.0) if self.capacity else 0.0

    def footprint(self, p: Profile) -> float:
        """The compute slices' worth of its GPU that a `p` partition takes: its share of the compute slices or of
        the memory slices, whichever is larger (a 1g.10gb on an A100 holds 1 of 7 compute slices but 2 of 8
        memory slices: it blocks 1.75 slices' worth)."""
        got = self._footprints.get(p.name)
        if got is None:
            m = next((m for m in self.models.values() if any(q.name == p.name for q in m.profiles)), None)
            got = (
                p.slices
                if m is None
                else m.compute_slices * max(p.slices / m.compute_slices, p.memory_slices / m.memory_slices)
            )
            self._footprints[p.name] = got
        return got

    def takes(self, p: Profile) -> float:
        """The compute slices that a new `p` partition takes from the pool as it stands: on the GPU where it
        costs the least, how many fewer one-slice partitions still fit once it is made at its best placement (a
        3g.20gb on an empty A100-40GB leaves room for four 1g.5gb: it takes 3, though it holds half the memory; a
        4g.20gb leaves three: it takes 4; a 1g.10gb at the last placement leaves six: it takes 1). Where it fits
        nowhere as things are, its footprint()."""
        if self._takes_at != self._changed:
            self._takes, self._takes_at = {}, self._changed
        got = self._takes.get(p.name)
        if got is not None:
            return got
        best = None
        for gpu in self.gpus:
            m = self.models[gpu]
            q = _profile_of(m, p.name)
            placed = self._instances(gpu)
            inst = self._best_placement(gpu, q, placed) if q is not None else None
            if inst is not None:
                took = self._slices(gpu, inst, placed)
                best = took if best is None else min(best, took)
        got = self._takes[p.name] = self.footprint(p) if best is None else best
        return got

    def load_factor(self, behind: int) -> float:
        """X of rule 6: what one slice-second of a task's run costs the others, in seconds of their wait."""
        u = min(self.busy_share(), 0.9)
        return (behind + KAPPA * u / (1 - u)) / max(self.capacity, 1)

    def arrival_rate(self) -> float:
        """Tasks per second, over the last ARRIVALS_KEPT arrivals (0 before two)."""
        if len(self.arrived) < 2:
            return 0.0
        span = max(self.clock() - self.arrived[0], 1e-9)
        return (len(self.arrived) - 1) / span

    def costs(self, job: Any, candidates: Sequence[Profile], behind: int) -> dict[str, float]:
        """Rule 6's cost of each size for `job`, counting the tasks expected to arrive while it runs (the arrival
        rate × its run time there). A checkpoint task counts them too: a move costs it, so a size it would soon
        be moved off is no bargain."""
        key = self._key(job)
        seconds = self.estimated(key, candidates)
        x = self.load_factor(behind)
        rate = self.arrival_rate()
        if not rate:
            return {p.name: seconds[p.name] * (1 + self.takes(p) * x) for p in candidates}
        measured = any(p.name in self.sizes.speeds(key)[0] for p in candidates)
        scale = 1.0 if measured or not self.mean_run else self.mean_run / max(seconds.values())
        c = max(self.capacity, 1)
        return {
            p.name: seconds[p.name] * (1 + self.takes(p) * (x + rate * seconds[p.name] * scale / c)) for p in candidates
        }

    def loaded(self, job: Any, choice: Choice, behind: int) -> Choice:
        """`choice` ranked by the load (rule 6): every size by its cost (costs()), a size not measured yet by its
        estimate (estimated()). On a quiet pool a task starts on the size that runs it fastest (or, a checkpoint
        task, that is estimated to: it can be moved), under load on one that does more per slice; the size being
        explored (sizing.py) is kept where it is larger than the one ranked first."""
        if job.task.partition is not None or not choice.ranked:
            return choice
        measured = self.sizes.speeds(self._key(job))[0]
        if not job.task.checkpoint and not any(p.name in measured for p in choice.ranked):
            return choice  # nothing measured, and it cannot move: the smallest first (sizing.py), not a guess
        cost = self.costs(job, choice.ranked, behind)
        if not job.task.checkpoint:  # it cannot move: only measured sizes are ranked by cost, the rest follow
            order = {p.name: k for k, p in enumerate(choice.ranked)}
            cost = {n: c if n in measured else float("inf") for n, c in cost.items()}
            ranked = tuple(sorted(choice.ranked, key=lambda p: (cost[p.name], order[p.name])))
        else:
            ranked = tuple(sorted(choice.ranked, key=lambda p: (cost[p.name], p.slices)))
        explore = choice.explore  # a larger size is still tried where the first one ranks below it
        return Choice(explore if explore is not None and explore.slices > ranked[0].slices else None, ranked)

    def good_fit(self, job: Any, worker: WorkerProcess, behind: int) -> bool:
        """Whether the idle `worker`'s partition suits `job` under the load (within TIE of its best size's cost),
        or its best size cannot be made in its place: an idle partition far too large for a task under load is
        left for the policy to split (rule 6), not taken."""
        slot = next((s for s in self.slots if s.worker is worker), None)
        if job.task.partition is not None or slot is None:
            return True
        choice = self.loaded(job, self.choice(job), behind)
        profile = slot.instance.profile.name
        if not choice.ranked or (choice.explore is not None and choice.explore.name == profile):
            return True
        best = choice.ranked[0]  # what provide() makes for it first
        cost = self.costs(job, [best, slot.instance.profile], behind)
        if profile == best.name or cost[profile] <= cost[best.name] * (1 + TIE):
            return True
        room = [i for i in self._instances(slot.gpu) if i is not slot.instance]
        return self._best_placement(slot.gpu, best, room) is None

    def estimated(self, key: Key, candidates: Sequence[Profile]) -> dict[str, float]:
        """Each candidate's run time (or seconds per unit): measured, else estimated from the nearest measured size
        as if the run time fell with the square root of the slices (GPU work rarely speeds up in proportion), or,
        with nothing measured, that rule alone."""
        seconds, _ = self.sizes.speeds(key)
        known = [p for p in candidates if p.name in seconds]
        out = {}
        for p in candidates:
            if p.name in seconds:
                out[p.name] = seconds[p.name]
            elif known:
                near = min(known, key=lambda k: (abs(k.slices - p.slices), k.slices))
                out[p.name] = _root_scaled(seconds[near.name], near.slices, p.slices)
            else:
                out[p.name] = p.slices**-0.5
        return out

    # --- moves of checkpoint tasks (rule 7) ---
    def _movable(self, s: Slot) -> tuple[Any, float, float, dict[str, float], float] | None:
        """(job, units left, seconds per unit here, seconds per unit by profile, what a move costs) of the
        checkpoint task that `s` runs, where it may move; else None."""
        if not s.worker.outstanding or s.worker.draining or s.gpu in self.resizing:
            return None
        job = s.worker.outstanding[0]
        if not job.task.checkpoint or job.task.partition is not None or job.pausing or job.moves >= MAX_MOVES:
            return None
        with self._mark_lock:
            mark = self.marks.get(job.id)
        total = job.progress[1] if job.progress else None
        if mark is None or mark[3] != id(s.worker) or total is None:
            return None
        key = self._key(job)
        units = self.sizes.per_unit(key)
        here = units.get(s.instance.profile.name)
        if here is None or not mark[4]:
            return None
        cost = self.sizes.move_cost(key)
        return job, max(total - mark[0], 0.0), here, units, MOVE_GUESS * mark[4] * here if cost is None else cost

    def _unit_time(self, units: dict[str, float], here: Profile, seconds: float, there: Profile) -> float:
        """Seconds per unit on `there`: measured, else estimated() by the square root of the slices (a guess that
        the first checkpoints there correct). A guess linear in the slices made no smaller size ever look cheaper
        per slice: a task alone on a whole GPU kept it while others waited (MISO's readme runs, 4,400 s)."""
        known = units.get(there.name)
        return known if known is not None else _root_scaled(seconds, here.slices, there.slices)

    def _remaining(self, s: Slot, now: float) -> float | None:
        """When the task on `s` is expected to end, in seconds from now (None where nothing says)."""
        got = self._movable(s)
        if got is not None:
            return got[1] * got[2]
        if not s.worker.outstanding:
            return 0.0
        job = s.worker.outstanding[0]
        took = self.sizes.measured(self._key(job)).get(s.instance.profile.name) if job.task.partition is None else None
        return None if took is None else max(took - (now - job.started), 0.0)

    def plan_moves(
        self, now: float, starved: Any, pending: bool, waiting: int = 0, unserved: Sequence[Any] = ()
    ) -> None:
        """Rule 7: at most one move under way; a shrink for `starved` (the oldest waiting task that got no
        partition; `waiting` tasks got none; `unserved`: the oldest of each kind that got none, `starved` first),
        else a grow when no task waits at all."""
        if self.moves or self.reserved is not None or self.making:
            return
        if starved is not None:
            self._shrink_for(starved, now, waiting, unserved or [starved])
        elif not pending:
            self._grow(now)

    def _room(self, gpu: Gpu, without: Slot) -> tuple[list[PlannedInstance], list[Slot]]:
        """The GPU's partitions less `without` and less the idle ones that may go (none promised to a task), and
        those idle ones."""
        idle = [
            t
            for t in self.slots
            if t.gpu == gpu and t.idle_since is not None and not t.worker.draining and id(t.worker) not in self.promised
        ]
        gone = {id(t.instance) for t in idle}
        return [i for i in self._instances(gpu) if i is not without.instance and id(i) not in gone], idle

    def _in_way(self, gpu: Gpu, inst: PlannedInstance, idle: list[Slot]) -> list[Slot]:
        """The idle partitions of `idle` that overlap `inst`."""
        return [t for t in idle if t.instance.placement.overlaps(inst.placement)]

    def _grow(self, now: float) -> None:
        best: tuple[float, Slot, Profile, str, list[Slot], Gpu] | None = None
        for s in self.slots:
            got = self._movable(s)
            if got is None:
                continue
            job, left, here, units, cost = got
            cur = s.instance.profile
            for gpu in self.gpus:  # on its own GPU or another: it resumes wherever its partition is made
                room, idle = self._room(gpu, s)
                for q in _holding(self.models[gpu], self._key(job)):
                    inst = self._best_placement(gpu, q, room) if q.slices > cur.slices else None
                    if inst is None:
                        continue
                    after = left * self._unit_time(units, cur, here, q) + cost
                    saved = left * here - after
                    if after < left * here * (1 - MOVE_MARGIN) and (best is None or saved > best[0]):
                        why = (
                            f"grown: nothing waits; {left * here:.0f} s left on {cur.name}, {after:.0f} s on "
                            f"{q.name}{_elsewhere(gpu, s)}"
                        )
                        best = (saved, s, q, why, self._in_way(gpu, inst, idle), gpu)
        if best is not None:
            self._ask_move(*best[1:], now)

    def _slices(self, gpu: Gpu, inst: PlannedInstance, others: list[PlannedInstance]) -> float:
        """The compute slices that `inst` leaves unusable beside `others` on `gpu` (as takes() counts them)."""
        m = self.models[gpu]
        unit = min((r for r in m.profiles if r.plain), key=lambda r: (r.slices, r.memory_mib))
        return max(float(max_addable(m, unit, others) - max_addable(m, unit, [*others, inst])), 1.0) * unit.slices

    def _shrink_for(self, starved: Any, now: float, waiting: int, unserved: Sequence[Any]) -> None:
        want = self.loaded(starved, self.choice(starved), 0).ranked[:2]
        # under load, a shrink may make room for any kind of task that waits: one of its two sizes ranked first
        wanted = [p for j in unserved[:SHRINK_KINDS] for p in self.loaded(j, self.choice(j), waiting).ranked[:2]]
        ends = [r for t in self.slots if t.worker.outstanding and (r := self._remaining(t, now)) is not None]
        wait = min(ends) if ends else float("inf")  # the soonest a busy partition frees
        x = self.load_factor(waiting - 1) if waiting > 1 else 0.0  # one waiting task: its own wait decides
        best: tuple[float, Slot, Profile, str, list[Slot], Gpu] | None = None
        for s in self.slots:
            got = self._movable(s)
            if got is None or self.reserved is not None:
                continue
            job, left, here, units, cost = got
            cur = s.instance.profile
            freed, _ = self._room(s.gpu, s)  # its GPU once it has left
            for gpu in self.gpus:  # to a smaller partition on its own GPU or another
                room, idle = self._room(gpu, s)
                for q in _holding(self.models[gpu], self._key(job)):
                    inst = self._best_placement(gpu, q, room) if q.slices < cur.slices else None
                    if inst is None:
                        continue
                    after = {s.gpu: freed, gpu: [*room, inst]}  # the layouts the move leaves
                    there = self._unit_time(units, cur, here, q)
                    loss = left * (there - here) + cost
                    if (
                        loss < wait
                        and (best is None or wait - loss > best[0])
                        and any(self._fits_one(g, want, placed) for g, placed in after.items())
                    ):
                        why = (
                            f"shrunk for a waiting task: {q.name}{_elsewhere(gpu, s)} costs this one about "
                            f"{loss:.0f} s; the waiting one would wait "
                            f"{'long' if wait == float('inf') else f'{wait:.0f} s'}"
                        )
                        best = (wait - loss, s, q, why, self._in_way(gpu, inst, idle), gpu)
                        continue
                    if not x or not any(self._fits_one(g, wanted, placed) for g, placed in after.items()):
                        continue
                    # under load (rule 6's cost): what the task's rest costs where it is, against on q after the move
                    stay = left * here * (1 + self._slices(s.gpu, s.instance, freed) * x)
                    go = (left * there + cost) * (1 + self._slices(gpu, inst, room) * x)
                    if go < stay * (1 - MOVE_MARGIN) and (best is None or stay - go > best[0]):
                        why = (
                            f"shrunk under load: {waiting} task(s) wait; {left * here:.0f} s left on {cur.name}, "
                            f"{left * there:.0f} s on {q.name}{_elsewhere(gpu, s)}"
                        )
                        best = (stay - go, s, q, why, self._in_way(gpu, inst, idle), gpu)
        if best is not None:
            self._ask_move(*best[1:], now)

    def _fits_one(self, gpu: Gpu, sizes: Sequence[Profile], placed: list[PlannedInstance]) -> bool:
        """Whether a partition of one of `sizes` still fits on `gpu` beside `placed`."""
        m = self.models[gpu]
        return any((w := _profile_of(m, p.name)) is not None and self._best_placement(gpu, w, placed) for p in sizes)

    def _ask_move(self, s: Slot, q: Profile, why: str, clear: list[Slot], gpu: Gpu, now: float) -> None:
        """Stop the task on `s` at its next checkpoint, to resume on a `q` partition made on `gpu` (its own or
        another) once it stopped; the idle partitions `clear` in that one's way take no task meanwhile."""
        with self.sched.lock:
            if not s.worker.outstanding or any(t.worker.outstanding for t in clear):
                return
            job = s.worker.outstanding[0]
            for t in (s, *clear):
                t.worker.draining = True  # they take no new task: they go once the task stopped
            s.worker.pause(job)
        with self._mark_lock:
            mark = self.marks.get(job.id)
        self.moves[job.id] = Move(job, s, gpu, q, now, mark[0] if mark else 0.0, why, clear)
        self._note("move", s.gpu, s.instance.profile.name, s.instance.placement, why)

    def _follow_moves(self, now: float) -> None:
        """The moves' next steps: a task that stopped gets its partition made (its old one destroyed first); a
        task that resumed, or ended before it stopped, is done moving; a partition made for a task that has not
        taken it within TARGET_WAIT_S is left to any task. A task whose move ends is handed out again at once (the
        scheduler's pump): while it was moving it waited for its own partition, which no event now calls for."""
        before = len(self.moves)
        while self._stopped:
            job, worker = self._stopped.popleft()
            move = self.moves.get(job.id)
            if move is None:
                continue
            move.since, move.state = now, "stopped"
            gone = [t for t in (move.slot, *move.clear) if t in self.slots]
            if gone:
                self.destroy(gone, f"moving a task to a {move.profile.name} partition")
            inst = self._best_placement(move.gpu, move.profile, self._instances(move.gpu))
            if inst is None:  # the room went meanwhile: it resumes on any partition that serves it
                del self.moves[job.id]
                continue
            self.create(move.gpu, inst, f"moved here: {move.why}", key=self._key(job), holds=job.task.need_mib or 0.0)
            move.target = self.making[-1]
        for jid, move in list(self.moves.items()):
            if move.state in ("ended", "resumed"):
                if move.state == "ended":
                    with self.sched.lock:
                        for t in (move.slot, *move.clear):
                            if t in self.slots:
                                t.worker.draining = False
                del self.moves[jid]
            elif isinstance(move.target, Making) and move.target not in self.making:
                slot = next((t for t in self.slots if t.instance is move.target.instance), None)
                if slot is None:  # its create failed: it resumes on any partition that serves it
                    del self.moves[jid]
                else:
                    move.target = slot
            elif isinstance(move.target, Slot) and move.target not in self.slots:
                del self.moves[jid]  # its partition went: it resumes on any partition that serves it
            elif move.target is not None and now - move.since > TARGET_WAIT_S:
                del self.moves[jid]
        if len(self.moves) < before:
            self.sched.pump()

    def _leaves_room(self, gpu: Gpu, inst: PlannedInstance, name: str) -> bool:
        """Whether a `name` partition still fits on `gpu` once `inst` is made there (True where that GPU's model
        has no such profile: nothing to keep room for)."""
        try:
            p = self.models[gpu].profile(name)
        except MigpoolError:
            return True
        return p is inst.profile or self._best_placement(gpu, p, self._instances(gpu) + [inst]) is not None

    def _sized(self, key: Key, gpu: Gpu) -> Choice:
        return self.sizes.choose(key, _holding(self.models[gpu], key))

    def _suits(self, job: Any, w: WorkerProcess, behind: int) -> bool:
        return len(self.sched.pending) < 2 or self.good_fit(job, w, behind)

    def rank(self, job: Any, worker: WorkerProcess) -> int:
        """How much a task that asks for memory (or nothing) would rather run on this worker: 0 is best."""
        p = worker.spec.partition
        assert p is not None
        choice = self._sized(self._key(job), (p.node, p.gpu_index))
        if choice.explore is not None and choice.explore.name == p.profile:
            return -1  # a size being tried: measured soonest if it runs the next task
        return next((k for k, q in enumerate(choice.ranked) if q.name == p.profile), len(choice.ranked))

    def hold(self, job: Any, idle: WorkerProcess, held: dict[int, float]) -> bool:
        """Whether `job` (asking for memory, or nothing) would finish sooner by waiting for a busy partition of a
        faster size than on the idle one: when the busy one is free (its task's measured run time less the time
        it has run, counting the jobs already waiting for it in `held`) plus the job's run time there, against
        its run time on `idle`, sooner by more than TIE (sizing.py). Only measured figures count; a task that
        overruns twice its figure is not waited for, so a job waits only a bounded time."""
        move = self.moves.get(job.id) if self.moves else None
        if move is not None and move.state == "stopped":  # a task being moved waits for the partition made for it
            return not (isinstance(move.target, Slot) and move.target.worker is idle)
        p = idle.spec.partition
        if job.task.partition is not None or p is None:
            return False
        if len(self.sched.pending) >= 2 and not self.good_fit(job, idle, len(self.sched.pending) - 1):
            return True  # too large for it under this load: the policy makes it a better size
        runs = self.sizes.measured(self._key(job))
        here = runs.get(p.profile)
        if here is None:
            return False
        now = self.clock()
        best: tuple[float, int] | None = None
        for w in self.sched.workers:
            q = w.spec.partition
            if q is None or not w.outstanding or w.draining or w.dead_reason or not w.serves(job.task):
                continue
            there = runs.get(q.profile)
            if there is None or there >= here:
                continue
            free_at = held.get(id(w))
            if free_at is None:
                running = w.outstanding[0]
                took = (
                    self.sizes.measured(self._key(running)).get(q.profile) if running.task.partition is None else None
                )
                ran = now - running.started
                if took is None or ran > 2 * took:
                    continue
                free_at = now + max(0.0, took - ran)
            if free_at + there < now + here * (1 - TIE) and (best is None or free_at + there < best[0]):
                best = (free_at + there, id(w))
        if best is None:
            return False
        held[best[1]] = best[0]
        return True

    def wanted(self, s: Slot) -> str | None:
        """The size that the tasks `s` last ran would rather have, where it differs from its own and still holds
        the memory of the tasks `s` was made for (a 3g.40gb made for 40 GB tasks is not shrunk because a small
        task ran on it last)."""
        if s.key is None:
            return None
        if s.instance.profile.name not in self.sizes.measured(s.key):
            return None  # its own size is not measured yet: it is being tried
        ranked = self._sized(s.key, s.gpu).ranked  # sizes being explored are made for waiting tasks only
        if not ranked or ranked[0].name == s.instance.profile.name or ranked[0].memory_mib < s.holds:
            return None
        return ranked[0].name

    def resize(self) -> None:
        """Move the layout toward the sizes the tasks run best on (pool/sizing.py), one partition per GPU at a
        time: the partitions in the way of a better size for a partition's tasks take no new task; once all of
        them are idle, they are destroyed and the better one is made. None starts while a GPU is reserved."""
        for gpu, (gone, want) in list(self.resizing.items()):
            if any(t not in self.slots for t in gone):  # freed meanwhile for a reservation
                del self.resizing[gpu]
                with self.sched.lock:
                    for t in gone:
                        t.worker.draining = False
                continue
            with self.sched.lock:
                if any(t.worker.outstanding for t in gone):
                    continue
            del self.resizing[gpu]
            inst = self._best_placement(
                gpu,
                self.models[gpu].profile(want),
                [i for i in self._instances(gpu) if all(i is not t.instance for t in gone)],
            )
            if inst is not None and len(self.destroy(gone, f"resized: its tasks run better on {want}")) == len(gone):
                self.create(
                    gpu,
                    inst,
                    f"resized from {gone[0].instance.profile.name}: its tasks run better on "
                    f"{want} ({self._speed(gone[0].key)})",
                    key=gone[0].key,
                    holds=gone[0].holds,
                )
            else:  # the layout changed meanwhile: the partitions kept take tasks again
                with self.sched.lock:
                    for t in gone:
                        if t in self.slots:
                            t.worker.draining = False
        if self.reserved is not None:
            return
        active = [s for s in self.slots if not s.worker.draining and s.gpu not in self.resizing]
        movable = {id(s): better for s in active if (better := self.wanted(s)) is not None}
        best: dict[Gpu, tuple[tuple[int, int], list[Slot], str]] = {}
        for s in active:
            target = movable.get(id(s))
            if target is None:
                continue
            m = self.models[s.gpu]
            placed = self._instances(s.gpu)
            mates = [t for t in active if t.gpu == s.gpu and t is not s and id(t) in movable]
            for k in range(len(mates) + 1):
                for others in combinations(mates, k):
                    gone = [s, *others]
                    rest = [i for i in placed if all(i is not t.instance for t in gone)]
                    if self._best_placement(s.gpu, m.profile(target), rest) is not None:
                        busy = sum(1 for t in gone if t.idle_since is None)
                        if s.gpu not in best or (busy, k) < best[s.gpu][0]:
                            best[s.gpu] = ((busy, k), gone, target)
                        break
                else:
                    continue
                break
        with self.sched.lock:
            for gpu, (_, gone, want) in best.items():
                for t in gone:
                    t.worker.draining = True
                self.resizing[gpu] = (gone, want)

    def _speed(self, key: Key | None) -> str:
        runs = self.sizes.measured(key) if key else {}
        bound = self.sizes.bounds(key) if key else {}
        return (
            ", ".join(
                f"{n} {t * 1000:.0f} ms" if n in runs else f"{n} ≤{t * 1000:.0f} ms (first run)"
                for n, t in sorted({**bound, **runs}.items())
            )
            or "not measured yet"
        )

    def reserve(self, name: str, job: Any) -> None:
        """Hold the GPU where the fewest busy partitions stand in the way, until `job`'s partition fits. A partition
        that an older task is about to run on is not taken from it: that task goes first."""
        best = None
        for gpu in self.gpus:
            m = self.models[gpu]
            try:
                p = m.profile(name)
            except MigpoolError:
                continue
            mine = [s for s in self.slots if s.gpu == gpu and self.promised.get(id(s.worker), job.id) >= job.id]
            for k in range(len(mine) + 1):
                for gone in combinations(mine, k):
                    rest = [i for i in self._instances(gpu) if all(i is not s.instance for s in gone)]
                    if self._best_placement(gpu, p, rest) is not None:
                        busy = sum(1 for s in gone if s.idle_since is None)
                        if best is None or (busy, k) < best[0]:
                            best = ((busy, k), gpu, list(gone))
                        break
        if best is None:
            return
        _, gpu, drain = best
        self.reserved = (gpu, name, job.id)
        with self.sched.lock:
            for s in drain:
                s.worker.draining = True
        self._note(
            "reserve",
            gpu,
            name,
            None,
            f"the oldest waiting task needs {name}; {len(drain)} partition(s) in the way take no new task",
        )

    def _blockers(self, gpu: Gpu) -> list[Slot]:
        """The reserved GPU's partitions in the way that still run their task (backfills aside)."""
        return [
            s
            for s in self.slots
            if s.gpu == gpu and s.worker.draining and s.worker.outstanding and id(s.instance) not in self.backfill
        ]

    def _backfills(self, job: Any, name: str) -> bool:
        """Whether `job` may run on a `name` partition of the reserved GPU meanwhile (rule 4's backfill): a
        checkpoint task may (it is stopped at a checkpoint, to resume elsewhere, once the partitions in the way
        are done); another task where its measured run time there ends before the last of them."""
        assert self.reserved is not None
        blockers = self._blockers(self.reserved[0])
        if not blockers or job.task.partition is not None:
            return False
        if job.task.checkpoint:
            return True
        took = self.sizes.measured(self._key(job)).get(name)
        now = self.clock()
        ends = [self._remaining(s, now) for s in blockers]
        return took is not None and all(e is not None for e in ends) and took <= max(e or 0.0 for e in ends)

    def _end_backfill(self) -> None:
        with self.sched.lock:
            for s in self.slots:
                if id(s.instance) in self.backfill and not (s.worker.outstanding and s.worker.outstanding[0].pausing):
                    s.worker.draining = False
        self.backfill.clear()

    def drain_reserved(self) -> None:
        """Destroy the reserved GPU's draining partitions that have finished their work. A partition made there
        for another task meanwhile (backfill) takes no task after it; once nothing else is in the way, a
        checkpoint task on one is stopped at its next checkpoint (it resumes on any partition that serves it)."""
        if self.reserved is None:
            return
        gpu = self.reserved[0]
        with self.sched.lock:
            filled = [s for s in self.slots if s.gpu == gpu and id(s.instance) in self.backfill]
            for s in filled:
                if s.worker.outstanding:
                    s.worker.draining = True
            blockers = self._blockers(gpu)
            for s in blockers:  # a checkpoint task in the way stops at its next checkpoint
                way = s.worker.outstanding[0]
                if way.task.checkpoint and not way.pausing and way.id not in self.moves and way.moves < MAX_MOVES:
                    s.worker.pause(way)
            if not blockers:
                for s in filled:
                    job = s.worker.outstanding[0] if s.worker.outstanding else None
                    if job is not None and job.task.checkpoint and not job.pausing and job.id not in self.moves:
                        s.worker.pause(job)
        done = [s for s in self.slots if s.gpu == gpu and s.worker.draining and not s.worker.outstanding]
        if done:
            self.destroy(done, f"making room for a waiting {self.reserved[1]} task")
        wanted = _profile_of(self.models[gpu], self.reserved[1])
        if (
            not any(s.gpu == gpu and s.worker.draining for s in self.slots)
            and not any(m.gpu == gpu for m in self.making)
            and (wanted is None or self._best_placement(gpu, wanted, self._instances(gpu)) is None)
        ):  # nothing drains, yet it does not fit: what was in its way changed meanwhile; reserved anew next step
            self._note("release", gpu, self.reserved[1], None, "the partitions in its way changed: reserved anew")
            self.reserved = None
            self._end_backfill()

    def create(self, gpu: Gpu, inst: PlannedInstance, reason: str, key: Key | None = None, holds: float = 0.0) -> None:
        """Start making `inst` on its node's change thread: one node's changes run in order, different nodes'
        side by side (on one machine the driver makes GPU instances one at a time anyway), and the controller
        goes on deciding meanwhile. It counts as made from now on (_instances); its worker starts in _made."""
        self.making.append(Making(gpu, inst, self.effects.make(gpu, inst), reason, key, holds))
        self._changed += 1

    def made(self) -> None:
        """Start the workers of the partitions made since the last step. A create that failed (rolled back by
        reconcile.change) is dropped, and its error raised once the others are done."""
        error: BaseException | None = None
        for m in [m for m in self.making if m.done.done()]:
            self.making.remove(m)
            self._changed += 1
            try:
                part = m.done.result()[0]
            except Exception as e:  # noqa: BLE001 - raised below: the loop counts it, and tries again
                error = error or e
                continue
            self.slots.append(Slot(m.gpu, m.instance, self.effects.start_worker(part), key=m.key, holds=m.holds))
            self._note("create", m.gpu, m.instance.profile.name, m.instance.placement, m.reason)
        if error is not None:
            raise error

    def destroy(self, slots: list[Slot], reason: str) -> list[Slot]:
        """Destroy these partitions, except any that took a task meanwhile; returns those destroyed."""
        by_gpu: dict[Gpu, list[Slot]] = {}
        for s in slots:
            with self.sched.lock:
                if s.worker.outstanding:  # it took a task meanwhile: never destroy a busy partition
                    continue
                s.worker.draining = True
            self.effects.retire(s.worker)
            self.slots.remove(s)
            self._changed += 1
            by_gpu.setdefault(s.gpu, []).append(s)
        error: Exception | None = None
        for gpu, gone in by_gpu.items():  # every GPU's, even after one failed: their workers are retired already
            try:
                self.effects.unmake(
                    gpu, [s.instance for s in gone], [s.worker.stats.pid for s in gone if s.worker.stats.pid]
                )
            except Exception as e:  # noqa: BLE001 - raised below, once every GPU was tried
                self.stale.setdefault(gpu, []).extend(s.instance for s in gone)  # in the way until destroyed
                error = error or e
                continue
            for s in gone:
                self._note("destroy", gpu, s.instance.profile.name, s.instance.placement, reason)
        if error is not None:
            raise error
        return [s for gone in by_gpu.values() for s in gone]

    def _destroy_stale(self) -> None:
        """Try again to destroy partitions whose destruction failed (their workers are gone)."""
        for gpu, insts in list(self.stale.items()):
            self.effects.unmake(gpu, insts, [])
            del self.stale[gpu]
            self._changed += 1
            for i in insts:
                self._note("destroy", gpu, i.profile.name, i.placement, "retried")

    def _note(self, action: str, gpu: Gpu, profile: str, placement: Any, reason: str) -> None:
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
        return [s.worker.spec.partition for s in self.slots if s.worker.spec.partition is not None]

    def _key(self, job: Any) -> Key:
        """The sizing group of a task that asks for memory (or nothing): its function and memory need."""
        if job.fid not in self._named:  # first seen: it takes up what earlier pools learned about it
            self._named.add(job.fid)
            self.sizes.name(job.fid, function_name(job.task.fn))
        return job.fid, job.task.need_mib or 0


def _root_scaled(seconds: float, slices: int, to: int) -> float:
    """A run time on `slices` compute slices, guessed on `to`: falling with the square root of the slices."""
    return seconds * (slices / to) ** 0.5


def _elsewhere(gpu: Gpu, s: Slot) -> str:
    """How a move's reason names its target GPU where it is not the moved task's own."""
    return "" if gpu == s.gpu else f" on GPU {gpu[1]}"


def _profile_of(m: GpuModel, name: str) -> Profile | None:
    try:
        return m.profile(name)
    except MigpoolError:
        return None


def _memory(w: Any) -> float:
    """The memory of a worker's partition, or of a partition being made (Making): the smallest serves first."""
    if isinstance(w, Making):
        return w.instance.profile.memory_mib
    return w.spec.partition.memory_mib if w.spec.partition else 0


def _holding(m: GpuModel, key: Key) -> list[Profile]:
    """The profiles of `m` that hold the memory `key` needs (no +me variants: their size is their base's)."""
    return [p for p in m.profiles if p.memory_mib >= key[1] and p.plain]


def profile_for_memory(models: list[GpuModel], min_memory: str) -> str:
    """The smallest profile (by memory, then slices) of the pool's GPUs that has at least `min_memory`."""
    need = parse_memory_mib(min_memory)
    fits = [p for m in models for p in m.profiles if p.memory_mib >= need and p.plain]
    if not fits:
        biggest = max((p for m in models for p in m.profiles), key=lambda p: p.memory_mib)
        raise PluginError(
            f"min_memory={min_memory} is more than any partition of this pool holds "
            f"(the largest: {biggest.name}, {biggest.memory_mib} MiB)"
        )
    return min(fits, key=lambda p: (p.memory_mib, p.slices)).name
