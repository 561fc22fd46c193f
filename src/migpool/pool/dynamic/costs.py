"""Dynamic MIG's sizing under load (rule 6 of policy.py): which sizes a task gets, ranked by its run time on each
× (1 + the compute slices a new partition takes × what a slice-second costs the others), from the run times
learned (sizing.py), the load and the arrival rate; and what the scheduler asks of them (rank, a wait for a
faster partition)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from ...mig.catalog import Profile, profiles_holding
from .placement import Placement
from .sizing import TIE, Choice, Key, RunTimes, function_name
from .state import Held
from .view import Gpu, PoolView, WorkerView, serves_worker

KAPPA = 2.0  # the load term's weight of the pool's busy share (rule 6)
ARRIVALS_KEPT = 32  # the arrival rate is taken over the last this many tasks


def root_scaled(seconds: float, slices: int, to: int) -> float:
    """A run time on `slices` compute slices, guessed on `to`: falling with the square root of the slices."""
    return seconds * (slices / to) ** 0.5


class Costs:
    """Rule 6 over the partitions `held` holds and the run times `sizes` learned; the clock is the view's."""

    def __init__(self, held: Held, placement: Placement, sizes: RunTimes, view: PoolView) -> None:
        self.held, self.placement, self.sizes, self.view = held, placement, sizes, view
        self.capacity = sum(m.compute_slices for m in held.models.values())
        self.arrived: collections.deque[float] = collections.deque(maxlen=ARRIVALS_KEPT)  # when tasks came
        self.mean_run = 0.0  # the moving average of tasks' run times: the run time of a task not measured yet
        self._named: set[int] = set()
        self._warm: set[tuple[int, int]] = set()  # (worker, function) pairs that ran once: later runs are timed

    def key(self, job: Any) -> Key:
        """The sizing group of a task that asks for memory (or nothing): its function and memory need."""
        if job.fid not in self._named:  # first seen: it takes up what earlier pools learned about it
            self._named.add(job.fid)
            self.sizes.name(job.fid, function_name(job.task.fn))
        return job.fid, job.task.need_mib or 0

    def learn(self, job: Any, worker: WorkerView, seconds: float) -> None:
        """A task that asks for memory (or nothing) ended well on `worker`: its run time (a worker's first run of
        a function, which may pay for loading it, only as an upper bound), unless it is timed per unit."""
        p = worker.spec.partition
        if p is None or job.task.partition is not None:
            return
        key = self.key(job)
        for s in list(self.held.slots):
            if s.worker is worker:
                s.key = key
        first = (id(worker), job.fid) not in self._warm
        self._warm.add((id(worker), job.fid))
        self.mean_run = seconds if not self.mean_run else 0.8 * self.mean_run + 0.2 * seconds
        if job.progress is not None and job.progress[0] is not None:
            return  # timed per unit of its work (progress)
        self.sizes.add(key, p.profile, seconds, first=first)

    def choice(self, job: Any) -> Choice:
        """The profiles to make for `job`: its own, or for a memory need (or none) the sizes learned so far."""
        models = self.held.models.values()
        if job.task.partition is not None:
            own = {p.name: p for m in models for p in m.profiles if p.name == job.task.partition}
            return Choice(None, tuple(own.values()))
        key = self.key(job)
        return self.sizes.choose(key, list({p.name: p for m in models for p in profiles_holding(m, key[1])}.values()))

    def sized(self, key: Key, gpu: Gpu) -> Choice:
        return self.sizes.choose(key, profiles_holding(self.held.models[gpu], key[1]))

    def busy_share(self) -> float:
        """The share of the pool's compute slices that partitions running a task hold."""
        busy = sum(self.placement.footprint(s.instance.profile) for s in self.held.slots if s.worker.outstanding)
        return min(busy / self.capacity, 1.0) if self.capacity else 0.0

    def load_factor(self, behind: int) -> float:
        """X of rule 6: what one slice-second of a task's run costs the others, in seconds of their wait."""
        u = min(self.busy_share(), 0.9)
        return (behind + KAPPA * u / (1 - u)) / max(self.capacity, 1)

    def arrival_rate(self) -> float:
        """Tasks per second, over the last ARRIVALS_KEPT arrivals (0 before two)."""
        if len(self.arrived) < 2:
            return 0.0
        span = max(self.view.now() - self.arrived[0], 1e-9)
        return (len(self.arrived) - 1) / span

    def costs(self, job: Any, candidates: Sequence[Profile], behind: int) -> dict[str, float]:
        """Rule 6's cost of each size for `job`, counting the tasks expected to arrive while it runs (the arrival
        rate × its run time there). A checkpoint task counts them too: a move costs it, so a size it would soon
        be moved off is no bargain."""
        key = self.key(job)
        seconds = self.estimated(key, candidates)
        x = self.load_factor(behind)
        rate = self.arrival_rate()
        takes = self.placement.takes
        if not rate:
            return {p.name: seconds[p.name] * (1 + takes(p) * x) for p in candidates}
        measured = any(p.name in self.sizes.speeds(key)[0] for p in candidates)
        scale = 1.0 if measured or not self.mean_run else self.mean_run / max(seconds.values())
        c = max(self.capacity, 1)
        return {p.name: seconds[p.name] * (1 + takes(p) * (x + rate * seconds[p.name] * scale / c)) for p in candidates}

    def loaded(self, job: Any, choice: Choice, behind: int) -> Choice:
        """`choice` ranked by the load (rule 6): every size by its cost (costs()), a size not measured yet by its
        estimate (estimated()). On a quiet pool a task starts on the size that runs it fastest (or, a checkpoint
        task, that is estimated to: it can be moved), under load on one that does more per slice; the size being
        explored (sizing.py) is kept where it is larger than the one ranked first."""
        if job.task.partition is not None or not choice.ranked:
            return choice
        measured = self.sizes.speeds(self.key(job))[0]
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

    def good_fit(self, job: Any, worker: WorkerView, behind: int) -> bool:
        """Whether the idle `worker`'s partition suits `job` under the load (within TIE of its best size's cost),
        or its best size cannot be made in its place: an idle partition far too large for a task under load is
        left for the policy to split (rule 6), not taken."""
        slot = self.held.slot_of(worker)
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
        room = [i for i in self.held.instances(slot.gpu) if i is not slot.instance]
        return self.placement.best(slot.gpu, best, room) is None

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
                out[p.name] = root_scaled(seconds[near.name], near.slices, p.slices)
            else:
                out[p.name] = p.slices**-0.5
        return out

    def rank(self, job: Any, worker: WorkerView) -> int:
        """How much a task that asks for memory (or nothing) would rather run on this worker: 0 is best."""
        p = worker.spec.partition
        assert p is not None
        choice = self.sized(self.key(job), (p.node, p.gpu_index))
        if choice.explore is not None and choice.explore.name == p.profile:
            return -1  # a size being tried: measured soonest if it runs the next task
        return next((k for k, q in enumerate(choice.ranked) if q.name == p.profile), len(choice.ranked))

    def sooner_elsewhere(self, job: Any, idle: WorkerView, held: dict[int, float]) -> bool:
        """Whether `job` would finish sooner by more than TIE on a busy partition of a faster size than on the
        idle one: when the busy one is free (its task's measured run time less the time it has run, counting the
        jobs already waiting for it in `held`, where the one found is counted) plus the job's run time there. Only
        measured figures count; a task that overruns twice its figure is not waited for."""
        p = idle.spec.partition
        assert p is not None
        runs = self.sizes.measured(self.key(job))
        here = runs.get(p.profile)
        if here is None:
            return False
        now = self.view.now()
        best: tuple[float, int] | None = None
        for w in self.view.workers:
            q = w.spec.partition
            if (
                q is None
                or not w.outstanding
                or w.draining
                or w.dead_reason
                or not serves_worker(self.view, w, job.task)
            ):
                continue
            there = runs.get(q.profile)
            if there is None or there >= here:
                continue
            free_at = held.get(id(w))
            if free_at is None:
                running = w.outstanding[0]
                took = self.sizes.measured(self.key(running)).get(q.profile) if running.task.partition is None else None
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

    def speed(self, key: Key | None) -> str:
        """The run times measured for `key`, for a change's reason."""
        runs = self.sizes.measured(key) if key else {}
        bound = self.sizes.bounds(key) if key else {}
        return (
            ", ".join(
                f"{n} {t * 1000:.0f} ms" if n in runs else f"{n} ≤{t * 1000:.0f} ms (first run)"
                for n, t in sorted({**bound, **runs}.items())
            )
            or "not measured yet"
        )
