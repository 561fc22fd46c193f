"""The event model of a static set of partitions, and the search for the best layout per GPU under it.

A job has an arrival time and its run time on each kind of partition that holds it ("whole": a GPU without
MIG). On a static set of partitions, a waiting job, in arrival order, takes the free partition that runs it
fastest (or, `pick="largest"`, the largest); a job that fits no free partition does not hold back later ones.
No partition changes, no moves: what a fixed layout gives the same jobs.

The search (best_static) is exhaustive over every combination of per-GPU layouts where the combinations times the
jobs stay within a budget; beyond, it grows the best `keep` combinations of one GPU fewer by every layout, then
changes one GPU at a time while that lowers the mean JCT.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import LayoutError
from ..mig.catalog import GpuModel
from ..mig.planner import plan

WHOLE = "whole"  # a GPU without MIG
WHOLE_SLICES = 8  # what `pick="largest"` counts a whole GPU as: more than any partition


class Timed(Protocol):
    """What the model needs of a job (benchmarks/miso.py's Job is one)."""

    @property
    def arrival(self) -> float: ...

    @property
    def seconds(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Job:
    """One job: when it arrived, its run time on each kind of partition that holds it (WHOLE: a whole GPU), and
    which of those run times are estimates (never measured)."""

    arrival: float
    seconds: Mapping[str, float]
    name: str = ""
    estimated: frozenset[str] = field(default_factory=frozenset)


Combo = tuple[tuple[str, ...], ...]  # one layout (sorted profile names) per GPU


def maximal_layouts(gpu: GpuModel) -> list[tuple[str, ...]]:
    """Every layout of `gpu`'s plain profiles to which no partition can be added, as sorted profile names; a
    layout counts when the planner places all of it (over every placement it could take)."""
    names = sorted(p.name for p in gpu.profiles if p.plain)
    placeable: dict[tuple[str, ...], bool] = {(): True}

    def fits(layout: tuple[str, ...]) -> bool:
        if layout not in placeable:
            try:
                plan(gpu, {n: layout.count(n) for n in set(layout)})
                placeable[layout] = True
            except LayoutError:
                placeable[layout] = False
        return placeable[layout]

    found: list[tuple[str, ...]] = []

    def grow(current: tuple[str, ...]) -> None:
        if not any(fits(tuple(sorted((*current, n)))) for n in names):
            found.append(current)
            return
        for n in names:
            if (not current or n >= current[-1]) and fits((*current, n)):
                grow((*current, n))

    grow(())
    return sorted(found)


def dispatch(
    units: Sequence[str],
    trace: Sequence[Timed],
    pick: str = "fastest",
    slices: Mapping[str, int] | None = None,
    order: Callable[[Timed], float] | None = None,
) -> list[float]:
    """Each job's completion time (end - arrival; NaN for a job no partition holds) on the static partitions
    `units` (profile names, or WHOLE). A waiting job, in arrival order (or least `order(job)` first, ties in
    arrival order), takes a free partition that holds it: `fastest`, the one that runs it fastest (the first
    such); `largest`, the one with the most `slices` (a profile's compute slices; WHOLE counts as WHOLE_SLICES).
    Later jobs may go first.

    After every event no waiting job fits a free partition, so an arrival can only take a partition itself and
    a partition that frees goes to the first waiting job it holds: each event costs a heap step, not a scan."""
    size = dict(slices or {})
    free: dict[str, list[int]] = collections.defaultdict(list)  # free partitions by kind, lowest index first
    for i, u in enumerate(units):
        free[u].append(i)
    waiting: dict[str, list[tuple[float, int, int]]] = {u: [] for u in free}  # heaps of (order key, rank, job)
    placed = [False] * len(trace)
    order_of = sorted(range(len(trace)), key=lambda k: trace[k].arrival)
    key = [0.0] * len(trace) if order is None else [order(j) for j in trace]
    ends: list[tuple[float, int, int]] = []  # (when, job, partition)
    jct = [math.nan] * len(trace)
    a = 0
    while a < len(order_of) or ends:
        if a < len(order_of) and (not ends or trace[order_of[a]].arrival <= ends[0][0]):  # arrivals first on a tie
            k = order_of[a]
            a += 1
            job, now = trace[k], trace[k].arrival
            fits = [u for u in job.seconds if u in free]
            if pick == "fastest":
                choice = min(((job.seconds[u], free[u][0], u) for u in fits if free[u]), default=None)
            else:
                choice = min(((-size.get(u, WHOLE_SLICES), free[u][0], u) for u in fits if free[u]), default=None)
            if choice is None:
                for u in fits:
                    heapq.heappush(waiting[u], (key[k], a, k))
                continue
            u = choice[2]
            i = heapq.heappop(free[u])
            placed[k] = True
            heapq.heappush(ends, (now + job.seconds[u], k, i))
            continue
        now, k, i = heapq.heappop(ends)
        jct[k] = now - trace[k].arrival
        u = units[i]
        queue = waiting[u]
        while queue and placed[queue[0][2]]:
            heapq.heappop(queue)
        if queue:
            nxt = heapq.heappop(queue)[2]
            placed[nxt] = True
            heapq.heappush(ends, (now + trace[nxt].seconds[u], nxt, i))
        else:
            heapq.heappush(free[u], i)
    return jct


def mean(values: Sequence[float]) -> float:
    """The mean; infinite where a job never ran (NaN) or there is none."""
    return statistics.fmean(values) if values and not any(math.isnan(v) for v in values) else math.inf


def p95(values: Sequence[float]) -> float:
    """The 95th percentile (nearest rank below); infinite where a job never ran."""
    if not values or any(math.isnan(v) for v in values):
        return math.inf
    return sorted(values)[int(0.95 * (len(values) - 1))]


@dataclass(frozen=True)
class Outcome:
    """What the model expects of a set of partitions: mean and p95 completion time and the makespan (from the
    first arrival to the last end), in seconds."""

    mean_jct: float
    p95_jct: float
    makespan: float


def outcome(units: Sequence[str], trace: Sequence[Timed]) -> Outcome:
    jct = dispatch(units, trace)
    if not trace:
        return Outcome(0.0, 0.0, 0.0)
    first = min(j.arrival for j in trace)
    last = max(j.arrival + t for j, t in zip(trace, jct, strict=True))
    return Outcome(mean(jct), p95(jct), last - first if not math.isnan(last) else math.inf)


def units_of(combo: Iterable[tuple[str, ...]]) -> list[str]:
    return [u for lay in combo for u in lay]


class Search:
    """Scores combinations of layouts on one trace, each once."""

    def __init__(
        self,
        trace: Sequence[Timed],
        layouts: Sequence[tuple[str, ...]],
        order: Callable[[Timed], float] | None = None,
    ) -> None:
        self.trace = trace
        self.layouts = list(layouts)
        self.order = order
        self.scored: dict[Combo, float] = {}

    def score(self, combo: Combo) -> float:
        got = self.scored.get(combo)
        if got is None:
            got = self.scored[combo] = mean(dispatch(units_of(combo), self.trace, order=self.order))
        return got

    def ranked(self, combos: Iterable[Combo]) -> list[tuple[float, Combo]]:
        return sorted((self.score(c), c) for c in combos)


def best_static(
    trace: Sequence[Timed],
    gpus: int,
    layouts: Sequence[tuple[str, ...]],
    exhaustive_up_to: int = 4,
    keep: int = 20,
    order: Callable[[Timed], float] | None = None,
) -> tuple[Combo, float]:
    """The combination of per-GPU layouts (one of `layouts` each) with the lowest mean JCT on `trace` in the
    event model (waiting jobs served as dispatch's `order`), and that mean: exhaustive up to `exhaustive_up_to`
    GPUs; beyond, the best `keep` of one GPU fewer, each with every layout added, then improved one GPU at a time
    until no change lowers it."""
    search = Search(trace, layouts, order)
    if gpus <= exhaustive_up_to:
        best = search.ranked(itertools.combinations_with_replacement(search.layouts, gpus))[0]
        return best[1], best[0]
    top = _top(search, gpus - 1, exhaustive_up_to, keep)
    best_s, best_c = search.ranked({tuple(sorted((*c, lay))) for c in top for lay in search.layouts})[0]
    improved = True
    while improved:
        improved = False
        for k in range(gpus):
            for lay in search.layouts:
                cand = tuple(sorted((*best_c[:k], lay, *best_c[k + 1 :])))
                s = search.score(cand)
                if s < best_s - 1e-9:
                    best_s, best_c, improved = s, cand, True
    return best_c, best_s


def descend(trace: Sequence[Timed], gpus: int, layouts: Sequence[tuple[str, ...]], rounds: int = 4) -> Combo:
    """A good combination found cheaply: the best one layout on every GPU, then, up to `rounds` times, the one
    change of one GPU's layout that lowers the mean JCT most."""
    search = Search(trace, layouts)
    best_s, best_c = search.ranked(tuple([lay] * gpus) for lay in search.layouts)[0]
    for _ in range(rounds):
        cands = {
            tuple(sorted((*best_c[:k], lay, *best_c[k + 1 :])))
            for k in range(gpus)
            if k == 0 or best_c[k] != best_c[k - 1]  # the same layout elsewhere: the same candidates
            for lay in search.layouts
        }
        s, c = search.ranked(cands)[0]
        if s >= best_s - 1e-9:
            break
        best_s, best_c = s, c
    return best_c


def _top(search: Search, gpus: int, exhaustive_up_to: int, keep: int) -> list[Combo]:
    if gpus <= exhaustive_up_to:
        scored = search.ranked(itertools.combinations_with_replacement(search.layouts, gpus))
    else:
        prev = _top(search, gpus - 1, exhaustive_up_to, keep)
        scored = search.ranked({tuple(sorted((*c, lay))) for c in prev for lay in search.layouts})
    return [c for _, c in scored[:keep]]
