"""The layout planner: pure functions that place GPU instances on a GPU's placement table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

from ..errors import LayoutError
from .catalog import DeviceProfile, GpuModel, Placement, Profile
from .instance import InstanceKey, instance_key
from .layout import Layout


@dataclass(frozen=True)
class PlannedInstance:
    """One GPU instance: its profile and placement."""

    profile: Profile
    placement: Placement

    @property
    def start(self) -> int:
        return self.placement.start

    @property
    def size(self) -> int:
        return self.placement.size

    @property
    def key(self) -> InstanceKey:
        """What the journal knows it by (its profile's name and placement)."""
        return instance_key(self.profile.name, self.placement)

    def __str__(self) -> str:
        return f"{self.profile.name}@{self.placement}"


def occupied(instances: Iterable[PlannedInstance]) -> frozenset[int]:
    slots: set[int] = set()
    for i in instances:
        slots |= i.placement.slots
    return frozenset(slots)


def _fits(gpu: GpuModel, placed: Sequence[PlannedInstance], profile: Profile, placement: Placement) -> bool:
    if placement.start + placement.size > gpu.memory_slices:
        return False
    if any(placement.overlaps(i.placement) for i in placed):
        return False
    if sum(1 for i in placed if i.profile == profile) >= profile.max_instances:
        return False
    return sum(i.profile.slices for i in placed) + profile.slices <= gpu.compute_slices


def can_place(gpu: GpuModel, existing: Sequence[PlannedInstance], profile: Profile, placement: Placement) -> bool:
    """Would the driver accept `profile` at `placement` next to `existing`? (the placement must be legal)"""
    return placement in profile.placements and _fits(gpu, existing, profile, placement)


def _bounded(gpu: GpuModel, placed: Sequence[PlannedInstance], todo: Sequence[Profile]) -> bool:
    """Counting bounds that any placement must meet: compute slices, memory slices, instances per profile."""
    if sum(i.profile.slices for i in placed) + sum(p.slices for p in todo) > gpu.compute_slices:
        return False
    if len(occupied(placed)) + sum(p.memory_slices for p in todo) > gpu.memory_slices:
        return False
    counts: dict[Profile, int] = {}
    for p in [i.profile for i in placed] + list(todo):
        counts[p] = counts.get(p, 0) + 1
        if counts[p] > p.max_instances:
            return False
    return True


def _search(gpu: GpuModel, placed: list[PlannedInstance], todo: list[Profile]) -> list[PlannedInstance] | None:
    """Place `todo` (identical profiles adjacent) beside `placed`, or None. Answers are memoized per GPU model."""
    found = _search_cached(gpu, tuple(placed), tuple(todo))
    return None if found is None else list(placed) + list(found)


@lru_cache(maxsize=65536)
def _search_cached(
    gpu: GpuModel, placed: tuple[PlannedInstance, ...], todo: tuple[Profile, ...]
) -> tuple[PlannedInstance, ...] | None:
    if not _bounded(gpu, placed, todo):
        return None
    out: list[PlannedInstance] = []
    return tuple(out) if _dfs(gpu, list(placed), list(todo), 0, out) else None


def _dfs(
    gpu: GpuModel, placed: list[PlannedInstance], todo: list[Profile], first: int, out: list[PlannedInstance]
) -> bool:
    """Depth-first placement. Instances of one profile are interchangeable, so each next one of the same
    profile takes a placement after the previous one's (`first`): no order is tried twice."""
    if not todo:
        return True
    profile, rest = todo[0], todo[1:]
    for k in range(first, len(profile.placements)):
        pl = profile.placements[k]
        if _fits(gpu, placed, profile, pl):
            placed.append(PlannedInstance(profile, pl))
            out.append(placed[-1])
            nxt = k + 1 if rest and rest[0] == profile else 0
            if _dfs(gpu, placed, rest, nxt, out):
                return True
            placed.pop()
            out.pop()
    return False


def _expand(gpu: GpuModel, layout: Layout | dict | str) -> list[Profile]:
    """The layout's instances, one per partition; a count above what an empty GPU holds is refused before it is
    expanded (a count of 10**18 would otherwise fill the memory)."""
    counts = Layout.of(layout).resolve(gpu)
    if any(n > p.max_instances for p, n in counts):
        raise LayoutError(explain_counts(gpu, counts, ()))
    todo: list[Profile] = []
    for profile, n in counts:
        todo.extend([profile] * n)
    return todo


def plan(gpu: GpuModel, layout: Layout | dict | str, existing: Sequence[PlannedInstance] = ()) -> list[PlannedInstance]:
    """Place every instance of `layout` on `gpu` beside `existing`; return the new instances or raise LayoutError."""
    todo = _expand(gpu, layout)
    found = _search(gpu, list(existing), todo)
    if found is None:
        raise LayoutError(explain(gpu, todo, existing))
    return found[len(existing) :]


def max_addable(gpu: GpuModel, profile: Profile | str, existing: Sequence[PlannedInstance] = ()) -> int:
    """The most instances of `profile` that can still be added to a GPU holding `existing`."""
    p = gpu.profile(profile)
    for n in range(p.max_instances, 0, -1):
        if _search(gpu, list(existing), [p] * n) is not None:
            return n
    return 0


def max_devices(gpu: GpuModel, device: DeviceProfile | str, existing: Sequence[PlannedInstance] = ()) -> int:
    """The most MIG devices of this device profile (`3g.40gb`, or `1c.3g.40gb` inside them) that new GPU instances
    beside `existing` can hold."""
    d = gpu.device(device)
    return max_addable(gpu, d.gi, existing) * d.ci.instances


def explain(gpu: GpuModel, todo: Sequence[Profile], existing: Sequence[PlannedInstance]) -> str:
    """Why `todo` does not fit: slices taken, per-profile maxima, and what would fit instead."""
    counts: dict[Profile, int] = {}
    for p in todo:
        counts[p] = counts.get(p, 0) + 1
    return explain_counts(gpu, list(counts.items()), existing)


def explain_counts(gpu: GpuModel, counts: Sequence[tuple[Profile, int]], existing: Sequence[PlannedInstance]) -> str:
    """`explain` for profiles and their counts, in one sentence or two: what is there, the first reason, and the
    three profiles nearest in memory to the first asked that would fit instead."""
    want = {p.name: n for p, n in counts}
    ask = ", ".join(f"{n}×{name}" for name, n in want.items())
    head = f"cannot fit {ask} on {gpu.name}"
    if existing:
        taken = sorted(occupied(existing))
        alike: dict[str, list[PlannedInstance]] = {}
        for i in existing:
            alike.setdefault(i.profile.name, []).append(i)
        there = [str(xs[0]) if len(xs) == 1 else f"{len(xs)}×{name}" for name, xs in alike.items()]
        head += f" beside {', '.join(there)} (memory slices {taken} taken)"
    reasons = []
    for name, n in want.items():
        p = gpu.profile(name)
        room = max_addable(gpu, p, existing)
        if n > room:
            said = "" if len(want) == 1 else f"{name}: "
            reasons.append(f"{said}at most {room} fit here ({p.max_instances} on an empty GPU)")
    slices = sum(p.slices * n for p, n in counts) + sum(i.profile.slices for i in existing)
    if not reasons and slices > gpu.compute_slices:
        reasons.append(f"it needs {slices} compute slices of {gpu.compute_slices}")
    first = gpu.profile(next(iter(want)))
    near = sorted(gpu.profiles, key=lambda p: (p.name not in want, abs(p.memory_mib - first.memory_mib), -p.slices))
    fits = [f"{p.name} ×{k}" for p in near if (k := max_addable(gpu, p, existing))][:3]
    why = f": {'; '.join(reasons)}" if reasons else ""
    return f"{head}{why}. " + (f"Would fit instead: {', '.join(fits)}." if fits else "The GPU is full.")


@dataclass(frozen=True)
class Transition:
    """How to go from the instances a GPU has to a desired layout."""

    keep: tuple[PlannedInstance, ...]
    destroy: tuple[PlannedInstance, ...]
    create: tuple[PlannedInstance, ...]


def plan_transition(
    gpu: GpuModel,
    layout: Layout | dict | str,
    existing: Sequence[PlannedInstance],
    busy: Iterable[PlannedInstance] = (),
) -> Transition:
    """The fewest changes from `existing` to `layout`: keep as many matching instances as possible
    (busy ones first), destroy the rest, create what is missing."""
    todo = _expand(gpu, layout)
    busy_set = set(busy)
    want: dict[Profile, int] = {}
    for p in todo:
        want[p] = want.get(p, 0) + 1
    candidates = [i for i in existing if i.profile in want]
    best: tuple[tuple[int, int], list[PlannedInstance], list[PlannedInstance]] | None = None
    for r in range(len(candidates), -1, -1):
        if best is not None and best[0][1] > r and best[0][0] == len(busy_set & set(candidates)):
            break  # fewer kept instances can only score lower
        for keep in combinations(candidates, r):
            missing = dict(want)
            for i in keep:
                missing[i.profile] -= 1
            if any(n < 0 for n in missing.values()):
                continue
            todo_new = [p for p, n in missing.items() for _ in range(n)]
            todo_new.sort(key=lambda p: (-p.memory_slices, -p.slices, p.name))
            placed = _search(gpu, list(keep), todo_new)
            if placed is None:
                continue
            score = (sum(1 for i in keep if i in busy_set), r)
            if best is None or score > best[0]:
                best = (score, list(keep), placed[len(keep) :])
    if best is None:
        raise LayoutError(explain(gpu, todo, ()))
    _, kept, create = best
    keep = tuple(kept)
    destroy = [i for i in existing if i not in keep]
    return Transition(tuple(keep), tuple(destroy), tuple(create))
