"""Rule 4 of dynamic MIG's policy, no starvation: the GPU reserved for the oldest waiting task that no partition
can take, the partitions in its way drained and destroyed as they finish, and what may use the room meanwhile
(backfill)."""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any

from ...errors import MigpoolError
from ...mig.planner import PlannedInstance
from .moves import MAX_MOVES
from .placement import profile_of
from .state import Made
from .view import Gpu

if TYPE_CHECKING:
    from .policy import DynamicPolicy


class Reservations:
    """The reservation of `policy` (at most one): `reserved` is (GPU, profile, job id) or None; `backfill` the ids
    of the instances made on the reserved GPU for other tasks meanwhile."""

    def __init__(self, policy: DynamicPolicy) -> None:
        self.policy = policy
        self.reserved: tuple[Gpu, str, int] | None = None
        self.backfill: set[int] = set()

    def allows(self, gpu: Gpu, job: Any, name: str) -> bool:
        """Whether a `name` partition may be made for `job` on `gpu`: not on a GPU reserved for another task,
        unless as a backfill."""
        r = self.reserved
        return not (r and r[0] == gpu and r[2] != job.id and not self.backfills(job, name))

    def made_for(self, gpu: Gpu, job: Any, inst: PlannedInstance) -> str:
        """Count `inst`, made for `job` on `gpu`, as a backfill where that GPU is reserved for another task; what
        the change's reason says of it."""
        r = self.reserved
        if r and r[0] == gpu and r[2] != job.id:
            self.backfill.add(id(inst))
            return f" (meanwhile on a GPU held for a {r[1]} task)"
        return ""

    def still_waits(self, pending: list[Any]) -> None:
        """Release the reservation whose task got a partition (or was cancelled): it waits no more."""
        if self.reserved and not any(j.id == self.reserved[2] for j in pending):
            self.reserved = None
            self.end_backfill()

    def reserve(self, name: str, job: Any) -> None:
        """Hold the GPU where the fewest busy partitions stand in the way, until `job`'s partition fits. A partition
        that an older task is about to run on is not taken from it: that task goes first."""
        p, held = self.policy, self.policy.held
        best = None
        for gpu in held.gpus:
            try:
                want = held.models[gpu].profile(name)
            except MigpoolError:
                continue
            mine = [s for s in held.slots if s.gpu == gpu and p.promised.get(id(s.worker), job.id) >= job.id]
            for k in range(len(mine) + 1):
                for gone in combinations(mine, k):
                    rest = [i for i in held.instances(gpu) if all(i is not s.instance for s in gone)]
                    if p.placement.best(gpu, want, rest) is not None:
                        busy = sum(1 for s in gone if s.idle_since is None)
                        if best is None or (busy, k) < best[0]:
                            best = ((busy, k), gpu, list(gone))
                        break
        if best is None:
            return
        _, gpu, drain = best
        self.reserved = (gpu, name, job.id)
        with p.view.lock:
            p.effects.drain([s.worker for s in drain])
        p.note(
            "reserve",
            gpu,
            name,
            None,
            f"the oldest waiting task needs {name}; {len(drain)} partition(s) in the way take no new task",
        )

    def blockers(self, gpu: Gpu) -> list[Made]:
        """The reserved GPU's partitions in the way that still run their task (backfills aside)."""
        return [
            s
            for s in self.policy.held.slots
            if s.gpu == gpu and s.worker.draining and s.worker.outstanding and id(s.instance) not in self.backfill
        ]

    def backfills(self, job: Any, name: str) -> bool:
        """Whether `job` may run on a `name` partition of the reserved GPU meanwhile (rule 4's backfill): a
        checkpoint task may (it is stopped at a checkpoint, to resume elsewhere, once the partitions in the way
        are done); another task where its measured run time there ends before the last of them."""
        assert self.reserved is not None
        blockers = self.blockers(self.reserved[0])
        if not blockers or job.task.partition is not None:
            return False
        if job.task.checkpoint:
            return True
        p = self.policy
        took = p.sizes.measured(p.costs.key(job)).get(name)
        now = p.view.now()
        ends = [p.moves.remaining(s, now) for s in blockers]
        return took is not None and all(e is not None for e in ends) and took <= max(e or 0.0 for e in ends)

    def end_backfill(self) -> None:
        p = self.policy
        with p.view.lock:
            p.effects.drain(
                [
                    s.worker
                    for s in p.held.slots
                    if id(s.instance) in self.backfill
                    and not (s.worker.outstanding and s.worker.outstanding[0].pausing)
                ],
                on=False,
            )
        self.backfill.clear()

    def drain(self) -> None:
        """Destroy the reserved GPU's draining partitions that have finished their work. A partition made there
        for another task meanwhile (backfill) takes no task after it; once nothing else is in the way, a
        checkpoint task on one is stopped at its next checkpoint (it resumes on any partition that serves it)."""
        if self.reserved is None:
            return
        p, held = self.policy, self.policy.held
        gpu = self.reserved[0]
        moving = p.moves.active
        with p.view.lock:
            filled = [s for s in held.slots if s.gpu == gpu and id(s.instance) in self.backfill]
            p.effects.drain([s.worker for s in filled if s.worker.outstanding])
            blockers = self.blockers(gpu)
            for s in blockers:  # a checkpoint task in the way stops at its next checkpoint
                way = s.worker.outstanding[0]
                if way.task.checkpoint and not way.pausing and way.id not in moving and way.moves < MAX_MOVES:
                    p.effects.pause(s.worker, way)
            if not blockers:
                for s in filled:
                    job = s.worker.outstanding[0] if s.worker.outstanding else None
                    if job is not None and job.task.checkpoint and not job.pausing and job.id not in moving:
                        p.effects.pause(s.worker, job)
        done = [s for s in held.slots if s.gpu == gpu and s.worker.draining and not s.worker.outstanding]
        if done:
            p.destroy(done, f"making room for a waiting {self.reserved[1]} task")
        wanted = profile_of(held.models[gpu], self.reserved[1])
        if (
            not any(s.gpu == gpu and s.worker.draining for s in held.slots)
            and not any(m.gpu == gpu for m in held.making)
            and (wanted is None or p.placement.best(gpu, wanted, held.instances(gpu)) is None)
        ):  # nothing drains, yet it does not fit: what was in its way changed meanwhile; reserved anew next step
            p.note("release", gpu, self.reserved[1], None, "the partitions in its way changed: reserved anew")
            self.reserved = None
            self.end_backfill()
