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


def outcome(units: Sequence[str], trace: Sequence[Timed], prepared: Prepared | None = None) -> Outcome:
    """What the model expects of the partitions `units` for `trace` (`prepared`: the same, made ready once)."""
    if not trace:
        return Outcome(0.0, 0.0, 0.0)
    jct = completion_times(units, prepared or Prepared(trace))
    assert jct is not None  # nothing to stop at
    first = min(j.arrival for j in trace)
    last = max(j.arrival + t for j, t in zip(trace, jct, strict=True))
    return Outcome(mean(jct), p95(jct), last - first if not math.isnan(last) else math.inf)


def units_of(combo: Iterable[tuple[str, ...]]) -> list[str]:
    return [u for lay in combo for u in lay]


class Prepared:
    """A trace made ready for many runs of completion_times(): its jobs in arrival order, each job's kinds of
    partition fastest first, and `floor`, the least total completion time (every job on its fastest kind at
    once); per set of kinds a combination has (fit()), the same for those kinds."""

    def __init__(self, trace: Sequence[Timed]) -> None:
        self.size = len(trace)
        self.order = sorted(range(len(trace)), key=lambda k: trace[k].arrival)
        self.arrival = [j.arrival for j in trace]
        self.seconds = [j.seconds for j in trace]
        self.ranked = [sorted(s, key=s.__getitem__) for s in self.seconds]
        self.floor = math.fsum(s[r[0]] if r else math.inf for s, r in zip(self.seconds, self.ranked, strict=True))
        self.kept: dict[frozenset[str], Fit] = {}

    def fit(self, kinds: frozenset[str]) -> Fit:
        got = self.kept.get(kinds)
        if got is None:
            prefs = [[u for u in r if u in kinds] for r in self.ranked]
            fastest = [s[p[0]] if p else math.inf for s, p in zip(self.seconds, prefs, strict=True)]
            got = self.kept[kinds] = Fit(prefs, fastest, math.fsum(fastest))
        return got


@dataclass(frozen=True)
class Fit:
    """A trace on some kinds of partition: per job, the kinds that hold it, fastest first, and its run time on
    the first (infinite: none holds it); `least`, their sum: no set of those kinds has a lower total."""

    prefs: list[list[str]]
    fastest: list[float]
    least: float


def total_jct(units: Sequence[str], trace: Prepared, stop_above: float = math.inf) -> float:
    """The sum of the jobs' completion times on the static partitions `units`, as completion_times() finds them;
    infinite where a job never runs or the sum passes `stop_above`."""
    jct = completion_times(units, trace, stop_above)
    total = math.inf if jct is None else math.fsum(jct)
    return math.inf if math.isnan(total) else total


def completion_times(units: Sequence[str], trace: Prepared, stop_above: float = math.inf) -> list[float] | None:
    """Each job's completion time on the static partitions `units` (NaN: never ran): what dispatch() gives with
    its defaults (pick "fastest", arrival order), in fewer steps. None as soon as the jobs already ended make the
    sum of the times certain to pass `stop_above` by more than rounding (each job left takes at least its fastest
    run time)."""
    free: dict[str, list[int]] = {}  # free partitions by kind, lowest index first (ascending: a heap)
    for i, u in enumerate(units):
        free.setdefault(u, []).append(i)
    waiting: dict[str, collections.deque[int]] = {u: collections.deque() for u in free}  # jobs in arrival order
    fit = trace.fit(frozenset(free))
    if math.isinf(fit.least) and not math.isinf(stop_above):
        return None  # a job no partition holds: the sum is infinite
    seconds, prefs, arrival, fastest = trace.seconds, fit.prefs, trace.arrival, fit.fastest
    placed = [False] * trace.size
    ends: list[tuple[float, int, int]] = []  # (when, job, partition)
    jct = [math.nan] * trace.size
    spare = stop_above * (1 + 1e-9) - fit.least  # what the jobs may take beyond their fastest run times here (and
    # rounding: the sum below is a plain one)
    over = 0.0
    push, pop = heapq.heappush, heapq.heappop
    order, a, n = trace.order, 0, trace.size
    while a < n or ends:
        if a < n and (not ends or arrival[order[a]] <= ends[0][0]):  # arrivals first on a tie
            k = order[a]
            a += 1
            secs = seconds[k]
            choice, best, first = "", 0.0, 0
            for u in prefs[k]:
                f = free[u]
                if f:
                    if not choice:
                        choice, best, first = u, secs[u], f[0]
                    elif secs[u] > best:
                        break
                    elif f[0] < first:  # as fast: the lower partition, as dispatch() takes
                        choice, first = u, f[0]
            if not choice:
                for u in prefs[k]:
                    waiting[u].append(k)
                continue
            placed[k] = True
            push(ends, (arrival[k] + best, k, pop(free[choice])))
            continue
        now, k, i = pop(ends)
        jct[k] = took = now - arrival[k]
        over += took - fastest[k]
        if over > spare:
            return None
        u = units[i]
        q = waiting[u]
        while q and placed[q[0]]:
            q.popleft()
        if q:
            nxt = q.popleft()
            placed[nxt] = True
            push(ends, (now + seconds[nxt][u], nxt, i))
        else:
            push(free[u], i)
    return jct


class Search:
    """Scores combinations of layouts, each once, on one trace or on several (`traces`: plausible futures): the
    score is the product over the traces of total_jct() / floor, the factor by which the jobs' completion times
    exceed their fastest run times (on one trace: in the order of the mean JCT; on several: in the order of
    their geometric mean, which weighs a light future as much as a busy one). `order` (dispatch()'s): served by
    dispatch(), without the cut-off."""

    def __init__(
        self,
        trace: Sequence[Timed] | Sequence[Sequence[Timed]],
        layouts: Sequence[tuple[str, ...]],
        order: Callable[[Timed], float] | None = None,
        several: bool = False,
    ) -> None:
        traces: Sequence[Sequence[Timed]] = trace if several else [trace]  # type: ignore[list-item,assignment]
        self.traces = list(traces)
        self.prepared = [Prepared(t) for t in self.traces]
        self.layouts = list(layouts)
        self.order = order
        self.scored: dict[Combo, float] = {}
        self.cut: dict[Combo, float] = {}  # combos left off once their score passed this bound

    def score(self, combo: Combo, bound: float = math.inf) -> float:
        """The combo's score; infinite where it is certain to pass `bound` (or a job never runs)."""
        got = self.scored.get(combo)
        if got is not None:
            return got
        if self.cut.get(combo, -math.inf) >= bound:
            return math.inf
        units = units_of(combo)
        kinds = frozenset(units)
        # each trace's factor is at least least / floor (every job at once on its fastest kind here): the product
        # of those of the traces not run yet bounds what is left
        lows = [p.fit(kinds).least / (p.floor or 1.0) for p in self.prepared]
        after = [1.0] * len(lows)
        for k in range(len(lows) - 1, 0, -1):
            after[k - 1] = after[k] * lows[k]
        if self.order is None and lows and lows[0] * after[0] > bound * (1 + 1e-9):
            return self._left_off(combo, bound)
        product = 1.0
        for t, p, rest in zip(self.traces, self.prepared, after, strict=True):
            floor = p.floor or 1.0
            if self.order is not None:
                total = math.fsum(dispatch(units, t, order=self.order))
            else:
                room = product * rest  # (0 where jobs take no time: nothing to cut off by)
                total = total_jct(units, p, floor * bound / room if room > 0 else math.inf)
            if math.isnan(total) or math.isinf(total):
                if self.order is not None:
                    self.scored[combo] = math.inf
                    return math.inf
                return self._left_off(combo, bound)
            product *= total / floor
        self.scored[combo] = product
        return product

    def _left_off(self, combo: Combo, bound: float) -> float:
        """A combo certain to score above `bound` (or never to run a job): infinite for now."""
        if math.isinf(bound):
            self.scored[combo] = math.inf
        else:
            self.cut[combo] = bound
        return math.inf

    def ranked(self, combos: Iterable[Combo]) -> list[tuple[float, Combo]]:
        return sorted((self.score(c), c) for c in combos)

    def best(self, combos: Iterable[Combo], bound: float = math.inf) -> tuple[float, Combo | None]:
        """The least (score, combo) of `combos` (ties: the least combo), each scored only as far as it could
        still be the least, or below `bound` (None: none is)."""
        best_s, best_c = bound, None
        for c in combos:
            s = self.score(c, best_s)
            if (
                best_c is None
                and math.isinf(bound)
                or s < best_s
                or (s == best_s and best_c is not None and c < best_c)
            ):
                best_s, best_c = s, c
        return best_s, best_c


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
        best_c = search.best(itertools.combinations_with_replacement(search.layouts, gpus))[1]
        assert best_c is not None, "no layout to choose from"
    else:
        top = _top(search, gpus - 1, exhaustive_up_to, keep)
        best_s, first = search.best({tuple(sorted((*c, lay))) for c in top for lay in search.layouts})
        assert first is not None, "no layout to choose from"
        best_c = first
        improved = True
        while improved:
            improved = False
            for k in range(gpus):
                for lay in search.layouts:
                    cand = tuple(sorted((*best_c[:k], lay, *best_c[k + 1 :])))
                    s = search.score(cand, best_s)
                    if s < best_s * (1 - 1e-12):
                        best_s, best_c, improved = s, cand, True
    return best_c, mean(dispatch(units_of(best_c), trace, order=order))


def descend(
    trace: Sequence[Timed] | Sequence[Sequence[Timed]],
    gpus: int,
    layouts: Sequence[tuple[str, ...]],
    rounds: int = 4,
    several: bool = False,
) -> Combo:
    """A good combination found cheaply: the best one layout on every GPU, then, up to `rounds` times, the one
    change of one GPU's layout that lowers the score most (Search's: `several` traces, scored together)."""
    search = Search(trace, layouts, several=several)
    best_s, first = search.best(tuple([lay] * gpus) for lay in search.layouts)
    assert first is not None, "no layout to choose from"
    best_c = first
    for _ in range(rounds):
        cands = {
            tuple(sorted((*best_c[:k], lay, *best_c[k + 1 :])))
            for k in range(gpus)
            if k == 0 or best_c[k] != best_c[k - 1]  # the same layout elsewhere: the same candidates
            for lay in search.layouts
        }
        cands.discard(best_c)
        s, c = search.best(cands, best_s)
        if c is None or not s < best_s * (1 - 1e-12):
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
