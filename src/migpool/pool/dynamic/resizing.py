"""Dynamic MIG's resizes of partitions already made: the layout moved toward the sizes that their tasks run best
on (sizing.py), one partition per GPU at a time, never while a GPU is reserved."""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

from .state import Made
from .view import Gpu

if TYPE_CHECKING:
    from .policy import DynamicPolicy


class Resizing:
    """The resizes of `policy`: `active` holds, per GPU, the partitions draining to make a better size, and that
    size."""

    def __init__(self, policy: DynamicPolicy) -> None:
        self.policy = policy
        self.active: dict[Gpu, tuple[list[Made], str]] = {}

    def wanted(self, s: Made) -> str | None:
        """The size that the tasks `s` last ran would rather have, where it differs from its own and still holds
        the memory of the tasks `s` was made for (a 3g.40gb made for 40 GB tasks is not shrunk because a small
        task ran on it last)."""
        if s.key is None:
            return None
        if s.instance.profile.name not in self.policy.sizes.measured(s.key):
            return None  # its own size is not measured yet: it is being tried
        ranked = self.policy.costs.sized(s.key, s.gpu).ranked  # sizes being explored are made for waiting tasks only
        if not ranked or ranked[0].name == s.instance.profile.name or ranked[0].memory_mib < s.holds:
            return None
        return ranked[0].name

    def step(self) -> None:
        """The partitions in the way of a better size for a partition's tasks take no new task; once all of them
        are idle, they are destroyed and the better one is made. None starts while a GPU is reserved."""
        p, held = self.policy, self.policy.held
        for gpu, (gone, want) in list(self.active.items()):
            if any(t not in held.slots for t in gone):  # freed meanwhile for a reservation
                del self.active[gpu]
                with p.view.lock:
                    p.effects.drain([t.worker for t in gone], on=False)
                continue
            with p.view.lock:
                if any(t.worker.outstanding for t in gone):
                    continue
            del self.active[gpu]
            inst = p.placement.best(
                gpu,
                held.models[gpu].profile(want),
                [i for i in held.instances(gpu) if all(i is not t.instance for t in gone)],
            )
            if inst is not None and len(p.destroy(gone, f"resized: its tasks run better on {want}")) == len(gone):
                p.create(
                    gpu,
                    inst,
                    f"resized from {gone[0].instance.profile.name}: its tasks run better on "
                    f"{want} ({p.costs.speed(gone[0].key)})",
                    key=gone[0].key,
                    holds=gone[0].holds,
                )
            else:  # the layout changed meanwhile: the partitions kept take tasks again
                with p.view.lock:
                    p.effects.drain([t.worker for t in gone if t in held.slots], on=False)
        if p.reservations.reserved is not None:
            return
        active = [s for s in held.slots if not s.worker.draining and s.gpu not in self.active]
        movable = {id(s): better for s in active if (better := self.wanted(s)) is not None}
        best: dict[Gpu, tuple[tuple[int, int], list[Made], str]] = {}
        for s in active:
            target = movable.get(id(s))
            if target is None:
                continue
            m = held.models[s.gpu]
            placed = held.instances(s.gpu)
            mates = [t for t in active if t.gpu == s.gpu and t is not s and id(t) in movable]
            for k in range(len(mates) + 1):
                for others in combinations(mates, k):
                    gone = [s, *others]
                    rest = [i for i in placed if all(i is not t.instance for t in gone)]
                    if p.placement.best(s.gpu, m.profile(target), rest) is not None:
                        busy = sum(1 for t in gone if t.idle_since is None)
                        if s.gpu not in best or (busy, k) < best[s.gpu][0]:
                            best[s.gpu] = ((busy, k), gone, target)
                        break
                else:
                    continue
                break
        with p.view.lock:
            for gpu, (_, gone, want) in best.items():
                p.effects.drain([t.worker for t in gone])
                self.active[gpu] = (gone, want)
