"""Where a new partition goes on dynamic MIG's GPUs, and what it costs the room left: the placement that leaves
the most room for larger sizes, whether a size still fits, and the compute slices a partition takes (rule 6)."""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import MigpoolError
from ...mig.catalog import GpuModel, Profile
from ...mig.planner import PlannedInstance, can_place, max_addable
from .state import Held
from .view import Gpu


def profile_of(m: GpuModel, name: str) -> Profile | None:
    """`m`'s profile `name`, or None where that model has none."""
    try:
        return m.profile(name)
    except MigpoolError:
        return None


class Placement:
    """Placements on the GPUs that `held` holds, as they stand now."""

    def __init__(self, held: Held) -> None:
        self.held = held
        self.slice_counts = sorted({p.slices for m in held.models.values() for p in m.profiles}, reverse=True)
        self._footprints: dict[str, float] = {}
        self._takes: dict[str, float] = {}  # what a new partition takes (takes()) in the layout `_takes_at`
        self._takes_at = 0

    def room_after(self, m: GpuModel, placed: list[PlannedInstance]) -> tuple[int, ...]:
        """How many more partitions of each size (compute slices, largest first) still fit: higher is better.
        Counted by size, not by profile, so that GPUs of different models compare like for like."""
        most: dict[int, int] = {}
        for p in m.profiles:
            if p.plain:
                most[p.slices] = max(most.get(p.slices, 0), max_addable(m, p, placed))
        return tuple(most.get(k, 0) for k in self.slice_counts)

    def best(self, gpu: Gpu, profile: Profile, placed: list[PlannedInstance]) -> PlannedInstance | None:
        """The placement of a `profile` partition beside `placed` that leaves the most room, or None."""
        m = self.held.models[gpu]
        best = None
        for pl in profile.placements:
            cand = PlannedInstance(profile, pl)
            if can_place(m, placed, profile, pl):
                score = self.room_after(m, placed + [cand])
                if best is None or score > best[0]:
                    best = (score, cand)
        return best[1] if best else None

    def fits_one(self, gpu: Gpu, sizes: Sequence[Profile], placed: list[PlannedInstance]) -> bool:
        """Whether a partition of one of `sizes` still fits on `gpu` beside `placed`."""
        m = self.held.models[gpu]
        return any((w := profile_of(m, p.name)) is not None and self.best(gpu, w, placed) for p in sizes)

    def leaves_room(self, gpu: Gpu, inst: PlannedInstance, name: str) -> bool:
        """Whether a `name` partition still fits on `gpu` once `inst` is made there (True where that GPU's model
        has no such profile: nothing to keep room for)."""
        p = profile_of(self.held.models[gpu], name)
        if p is None:
            return True
        return p is inst.profile or self.best(gpu, p, self.held.instances(gpu) + [inst]) is not None

    def slices(self, gpu: Gpu, inst: PlannedInstance, others: list[PlannedInstance]) -> float:
        """The compute slices that `inst` leaves unusable beside `others` on `gpu` (as takes() counts them)."""
        m = self.held.models[gpu]
        unit = min((r for r in m.profiles if r.plain), key=lambda r: (r.slices, r.memory_mib))
        return max(float(max_addable(m, unit, others) - max_addable(m, unit, [*others, inst])), 1.0) * unit.slices

    def footprint(self, p: Profile) -> float:
        """The compute slices' worth of its GPU that a `p` partition takes: its share of the compute slices or of
        the memory slices, whichever is larger (a 1g.10gb on an A100 holds 1 of 7 compute slices but 2 of 8
        memory slices: it blocks 1.75 slices' worth)."""
        got = self._footprints.get(p.name)
        if got is None:
            models = self.held.models.values()
            m = next((m for m in models if any(q.name == p.name for q in m.profiles)), None)
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
        if self._takes_at != self.held.changed:
            self._takes, self._takes_at = {}, self.held.changed
        got = self._takes.get(p.name)
        if got is not None:
            return got
        best = None
        for gpu in self.held.gpus:
            q = profile_of(self.held.models[gpu], p.name)
            placed = self.held.instances(gpu)
            inst = self.best(gpu, q, placed) if q is not None else None
            if inst is not None:
                took = self.slices(gpu, inst, placed)
                best = took if best is None else min(best, took)
        got = self._takes[p.name] = self.footprint(p) if best is None else best
        return got
