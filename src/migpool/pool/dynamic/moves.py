"""Rule 7 of dynamic MIG's policy: checkpoint tasks moved to a better size. A grow when nothing waits, a shrink
for the tasks that wait; the task stops at its next checkpoint, its partition is destroyed, the new one made and
it resumes there. What its checkpoints teach (seconds per unit on each size, what a move costs) is learned here."""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...mig.catalog import Profile, profiles_holding
from ...mig.planner import PlannedInstance
from .costs import root_scaled
from .state import Made, Making, Move
from .view import Gpu, WorkerView

if TYPE_CHECKING:
    from .policy import DynamicPolicy

MOVE_MARGIN = 0.15  # a grow must cut the task's remaining time by this share, its cost included (rule 7)
MAX_MOVES = 4  # moves of one task, at most
MOVE_GUESS = 3.0  # a move is taken to cost this many of the task's checkpoint intervals until one is measured
SHRINK_KINDS = 8  # a shrink under load looks for room for this many kinds of waiting task, oldest first
TARGET_WAIT_S = 120.0  # how long a moved task waits for the partition made for it before any other may take it


def _elsewhere(gpu: Gpu, s: Made) -> str:
    """How a move's reason names its target GPU where it is not the moved task's own."""
    return "" if gpu == s.gpu else f" on GPU {gpu[1]}"


class Moves:
    """The moves of `policy`: `active` holds the checkpoint tasks being moved, by job id (asked, stopped,
    resuming); `marks` each checkpoint task's last checkpoint: job id -> (done, when, profile, worker id, units
    since the checkpoint before)."""

    def __init__(self, policy: DynamicPolicy) -> None:
        self.policy = policy
        self.active: dict[int, Move] = {}
        self.marks: dict[int, tuple[float, float, str, int, float]] = {}
        self._stopped: collections.deque[Any] = collections.deque()  # jobs that stopped for a move (reader threads)
        self._mark_lock = threading.Lock()

    # --- what the scheduler's threads report ---
    def ended(self, job: Any) -> None:
        """A task ended well: a move of it is over, whether it ended before it stopped (its partition takes tasks
        again) or on its new partition before a checkpoint there (a move left "stopped" stood until
        TARGET_WAIT_S). The step drops it."""
        with self._mark_lock:
            self.marks.pop(job.id, None)
        move = self.active.get(job.id)
        if move is not None and move.state in ("asked", "stopped"):
            move.state = "ended"

    def progress(self, job: Any, worker: WorkerView, done: float | None, now: float) -> None:
        """A checkpoint task reached a checkpoint (a worker's reader thread): learn its size's seconds per unit
        from the time since its last one on the same worker (not from its first after it started: that one pays
        for starting), and what its move cost when this is its first on the partition it moved to."""
        p = worker.spec.partition
        if p is None or job.task.partition is not None or done is None:
            return
        sizes = self.policy.sizes
        key = self.policy.costs.key(job)
        with self._mark_lock:
            last = self.marks.get(job.id)
            same = last is not None and last[2] == p.profile and last[3] == id(worker) and done > last[0]
            step = done - last[0] if same and last is not None else (last[4] if last is not None else 0.0)
            self.marks[job.id] = (done, now, p.profile, id(worker), step)
        if same and last is not None:
            sizes.add_unit(key, p.profile, (now - last[1]) / (done - last[0]))
        move = self.active.get(job.id)
        if move is not None and isinstance(move.target, Made) and move.target.worker is worker:
            unit = sizes.per_unit(key).get(p.profile, 0.0)
            sizes.add_move(key, max(0.0, now - move.asked - (done - move.done) * unit))
            move.state = "resumed"  # the step forgets the move

    def paused(self, job: Any, worker: WorkerView) -> None:
        """A task stopped at a checkpoint for a move (a worker's reader thread): the step makes its partition."""
        self._stopped.append((job, worker))

    def waits(self, job: Any, idle: WorkerView) -> bool | None:
        """Whether a task being moved waits rather than run on `idle`: it waits for the partition made for it;
        None for a task that is not (the other rules decide)."""
        move = self.active.get(job.id) if self.active else None
        if move is not None and move.state == "stopped":
            return not (isinstance(move.target, Made) and move.target.worker is idle)
        return None

    # --- reading a checkpoint task's state ---
    def movable(self, s: Made) -> tuple[Any, float, float, dict[str, float], float] | None:
        """(job, units left, seconds per unit here, seconds per unit by profile, what a move costs) of the
        checkpoint task that `s` runs, where it may move; else None."""
        if not s.worker.outstanding or s.worker.draining or s.gpu in self.policy.resizing.active:
            return None
        job = s.worker.outstanding[0]
        if not job.task.checkpoint or job.task.partition is not None or job.pausing or job.moves >= MAX_MOVES:
            return None
        with self._mark_lock:
            mark = self.marks.get(job.id)
        total = job.progress[1] if job.progress else None
        if mark is None or mark[3] != id(s.worker) or total is None:
            return None
        sizes = self.policy.sizes
        key = self.policy.costs.key(job)
        units = sizes.per_unit(key)
        here = units.get(s.instance.profile.name)
        if here is None or not mark[4]:
            return None
        cost = sizes.move_cost(key)
        return job, max(total - mark[0], 0.0), here, units, MOVE_GUESS * mark[4] * here if cost is None else cost

    @staticmethod
    def unit_time(units: dict[str, float], here: Profile, seconds: float, there: Profile) -> float:
        """Seconds per unit on `there`: measured, else estimated() by the square root of the slices (a guess that
        the first checkpoints there correct). A guess linear in the slices made no smaller size ever look cheaper
        per slice: a task alone on a whole GPU kept it while others waited (MISO's readme runs, 4,400 s)."""
        known = units.get(there.name)
        return known if known is not None else root_scaled(seconds, here.slices, there.slices)

    def remaining(self, s: Made, now: float) -> float | None:
        """When the task on `s` is expected to end, in seconds from now (None where nothing says)."""
        got = self.movable(s)
        if got is not None:
            return got[1] * got[2]
        if not s.worker.outstanding:
            return 0.0
        job = s.worker.outstanding[0]
        if job.task.partition is not None:
            return None
        took = self.policy.sizes.measured(self.policy.costs.key(job)).get(s.instance.profile.name)
        return None if took is None else max(took - (now - job.started), 0.0)

    # --- deciding ---
    def plan(self, now: float, starved: Any, pending: bool, waiting: int = 0, unserved: Sequence[Any] = ()) -> None:
        """At most one move under way; a shrink for `starved` (the oldest waiting task that got no partition;
        `waiting` tasks got none; `unserved`: the oldest of each kind that got none, `starved` first), else a grow
        when no task waits at all."""
        if self.active or self.policy.reservations.reserved is not None or self.policy.held.making:
            return
        if starved is not None:
            self._shrink_for(starved, now, waiting, unserved or [starved])
        elif not pending:
            self._grow(now)

    def _room(self, gpu: Gpu, without: Made) -> tuple[list[PlannedInstance], list[Made]]:
        """The GPU's partitions less `without` and less the idle ones that may go (none promised to a task), and
        those idle ones."""
        p = self.policy
        idle = [
            t
            for t in p.held.slots
            if t.gpu == gpu and t.idle_since is not None and not t.worker.draining and id(t.worker) not in p.promised
        ]
        gone = {id(t.instance) for t in idle}
        return [i for i in p.held.instances(gpu) if i is not without.instance and id(i) not in gone], idle

    @staticmethod
    def _in_way(inst: PlannedInstance, idle: list[Made]) -> list[Made]:
        """The idle partitions of `idle` that overlap `inst`."""
        return [t for t in idle if t.instance.placement.overlaps(inst.placement)]

    def _grow(self, now: float) -> None:
        p = self.policy
        best: tuple[float, Made, Profile, str, list[Made], Gpu] | None = None
        for s in p.held.slots:
            got = self.movable(s)
            if got is None:
                continue
            job, left, here, units, cost = got
            cur = s.instance.profile
            for gpu in p.held.gpus:  # on its own GPU or another: it resumes wherever its partition is made
                room, idle = self._room(gpu, s)
                for q in profiles_holding(p.held.models[gpu], p.costs.key(job)[1]):
                    inst = p.placement.best(gpu, q, room) if q.slices > cur.slices else None
                    if inst is None:
                        continue
                    after = left * self.unit_time(units, cur, here, q) + cost
                    saved = left * here - after
                    if after < left * here * (1 - MOVE_MARGIN) and (best is None or saved > best[0]):
                        why = (
                            f"grown: nothing waits; {left * here:.0f} s left on {cur.name}, {after:.0f} s on "
                            f"{q.name}{_elsewhere(gpu, s)}"
                        )
                        best = (saved, s, q, why, self._in_way(inst, idle), gpu)
        if best is not None:
            self._ask(*best[1:], now)

    def _shrink_for(self, starved: Any, now: float, waiting: int, unserved: Sequence[Any]) -> None:
        p = self.policy
        costs, place = p.costs, p.placement
        want = costs.loaded(starved, costs.choice(starved), 0).ranked[:2]
        # under load, a shrink may make room for any kind of task that waits: one of its two sizes ranked first
        wanted = [q for j in unserved[:SHRINK_KINDS] for q in costs.loaded(j, costs.choice(j), waiting).ranked[:2]]
        ends = [r for t in p.held.slots if t.worker.outstanding and (r := self.remaining(t, now)) is not None]
        wait = min(ends) if ends else float("inf")  # the soonest a busy partition frees
        x = costs.load_factor(waiting - 1) if waiting > 1 else 0.0  # one waiting task: its own wait decides
        best: tuple[float, Made, Profile, str, list[Made], Gpu] | None = None
        for s in p.held.slots:
            got = self.movable(s)
            if got is None or p.reservations.reserved is not None:
                continue
            job, left, here, units, cost = got
            cur = s.instance.profile
            freed, _ = self._room(s.gpu, s)  # its GPU once it has left
            for gpu in p.held.gpus:  # to a smaller partition on its own GPU or another
                room, idle = self._room(gpu, s)
                for q in profiles_holding(p.held.models[gpu], costs.key(job)[1]):
                    inst = place.best(gpu, q, room) if q.slices < cur.slices else None
                    if inst is None:
                        continue
                    after = {s.gpu: freed, gpu: [*room, inst]}  # the layouts the move leaves
                    there = self.unit_time(units, cur, here, q)
                    loss = left * (there - here) + cost
                    if (
                        loss < wait
                        and (best is None or wait - loss > best[0])
                        and any(place.fits_one(g, want, placed) for g, placed in after.items())
                    ):
                        why = (
                            f"shrunk for a waiting task: {q.name}{_elsewhere(gpu, s)} costs this one about "
                            f"{loss:.0f} s; the waiting one would wait "
                            f"{'long' if wait == float('inf') else f'{wait:.0f} s'}"
                        )
                        best = (wait - loss, s, q, why, self._in_way(inst, idle), gpu)
                        continue
                    if not x or not any(place.fits_one(g, wanted, placed) for g, placed in after.items()):
                        continue
                    # under load (rule 6's cost): what the task's rest costs where it is, against on q after the move
                    stay = left * here * (1 + place.slices(s.gpu, s.instance, freed) * x)
                    go = (left * there + cost) * (1 + place.slices(gpu, inst, room) * x)
                    if go < stay * (1 - MOVE_MARGIN) and (best is None or stay - go > best[0]):
                        why = (
                            f"shrunk under load: {waiting} task(s) wait; {left * here:.0f} s left on {cur.name}, "
                            f"{left * there:.0f} s on {q.name}{_elsewhere(gpu, s)}"
                        )
                        best = (stay - go, s, q, why, self._in_way(inst, idle), gpu)
        if best is not None:
            self._ask(*best[1:], now)

    def _ask(self, s: Made, q: Profile, why: str, clear: list[Made], gpu: Gpu, now: float) -> None:
        """Stop the task on `s` at its next checkpoint, to resume on a `q` partition made on `gpu` (its own or
        another) once it stopped; the idle partitions `clear` in that one's way take no task meanwhile."""
        p = self.policy
        with p.view.lock:
            if not s.worker.outstanding or any(t.worker.outstanding for t in clear):
                return
            job = s.worker.outstanding[0]
            p.effects.drain([t.worker for t in (s, *clear)])  # they take no new task: they go once the task stopped
            p.effects.pause(s.worker, job)
        with self._mark_lock:
            mark = self.marks.get(job.id)
        self.active[job.id] = Move(job, s, gpu, q, now, mark[0] if mark else 0.0, why, clear)
        p.note("move", s.gpu, s.instance.profile.name, s.instance.placement, why)

    def follow(self, now: float) -> None:
        """The moves' next steps: a task that stopped gets its partition made (its old one destroyed first); a
        task that resumed, or ended before it stopped, is done moving; a partition made for a task that has not
        taken it within TARGET_WAIT_S is left to any task. A task whose move ends is handed out again at once (the
        scheduler's pump): while it was moving it waited for its own partition, which no event now calls for."""
        p, held = self.policy, self.policy.held
        before = len(self.active)
        while self._stopped:
            job, _ = self._stopped.popleft()
            move = self.active.get(job.id)
            if move is None:
                continue
            move.since, move.state = now, "stopped"
            gone = [t for t in (move.slot, *move.clear) if t in held.slots]
            if gone:
                p.destroy(gone, f"moving a task to a {move.profile.name} partition")
            inst = p.placement.best(move.gpu, move.profile, held.instances(move.gpu))
            if inst is None:  # the room went meanwhile: it resumes on any partition that serves it
                del self.active[job.id]
                continue
            p.create(move.gpu, inst, f"moved here: {move.why}", key=p.costs.key(job), holds=job.task.need_mib or 0.0)
            move.target = held.making[-1]
        for jid, move in list(self.active.items()):
            if move.state in ("ended", "resumed"):
                if move.state == "ended":
                    with p.view.lock:
                        p.effects.drain([t.worker for t in (move.slot, *move.clear) if t in held.slots], on=False)
                del self.active[jid]
            elif isinstance(move.target, Making) and move.target not in held.making:
                slot = next((t for t in held.slots if t.instance is move.target.instance), None)
                if slot is None:  # its create failed: it resumes on any partition that serves it
                    del self.active[jid]
                else:
                    move.target = slot
            elif isinstance(move.target, Made) and move.target not in held.slots:
                del self.active[jid]  # its partition went: it resumes on any partition that serves it
            elif move.target is not None and now - move.since > TARGET_WAIT_S:
                del self.active[jid]
        if len(self.active) < before:
            p.effects.pump()
