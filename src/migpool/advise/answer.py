"""What `migpool advise` answers: the best layout per GPU for a workload in the event model (model.py), what it
and the other choices are expected to give, the `migpool apply` lines that make it, and how many GPUs reach a
mean JCT."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..mig.catalog import GpuModel
from ..mig.layout import OFF
from . import futures
from .model import WHOLE, Combo, Job, Outcome, Prepared, Search, descend, maximal_layouts, outcome, units_of

BUDGET = 200_000  # jobs dispatched in all by one search, about (well under a second of the model, at some 3 us a job)
MIN_JOBS = 200  # the fewest latest jobs a search draws on (futures of as many); the figures are on all of them


@dataclass(frozen=True)
class Row:
    """One choice: its layout per GPU (WHOLE: no MIG) and what the event model expects of it."""

    name: str
    layouts: tuple[tuple[str, ...], ...]
    expected: Outcome


@dataclass(frozen=True)
class Advice:
    model: str
    gpus: int
    tasks: int
    estimated: int  # tasks with a size never measured for them
    searched: int  # the latest tasks the search scored layouts on
    exhaustive: bool
    rows: tuple[Row, ...]
    apply: tuple[str, ...]
    target: dict[str, float | int | None] = field(default_factory=dict)

    @property
    def best(self) -> Row:
        return self.rows[0]


def search(
    jobs: Sequence[Job], gpus: int, layouts: Sequence[tuple[str, ...]], budget: float = BUDGET, robust: bool = True
) -> tuple[Combo, bool, int]:
    """The best layouts for `gpus` GPUs, whether the search was exhaustive, and how many of the latest jobs it
    drew on. `robust`: scored on futures.COUNT futures drawn from those jobs (Search's geometric mean over them),
    else on the jobs themselves. Every combination where they times the jobs scored stay within `budget` (jobs
    dispatched in all), else descend() on futures (or latest jobs) small enough to keep it within budget
    (MIN_JOBS at least)."""
    combos = math.comb(len(layouts) + gpus - 1, gpus)
    count = futures.COUNT if robust else 1
    exhaustive = combos * count * len(jobs) <= budget
    if exhaustive:
        drawn = list(jobs)
    else:
        scores = len(layouts) * (1 + 2 * min(gpus, len(layouts)))  # what descend() scores in two rounds, at most
        drawn = list(jobs[-max(MIN_JOBS, int(budget // (scores * count))) :])
    traces = futures.futures(drawn, len(drawn), count) if robust else [drawn]
    search = Search(traces, layouts, several=True)
    if exhaustive:
        combo = search.best(itertools.combinations_with_replacement(search.layouts, gpus))[1]
        assert combo is not None, "no layout to choose from"
        return combo, True, len(drawn)
    return descend(traces, gpus, layouts, several=True), False, len(drawn)


def candidates(gpu: GpuModel) -> list[tuple[str, ...]]:
    """The layouts a GPU may get: every maximal one, and MIG off (a whole GPU: the only home of a task that needs
    more memory than the GPU-wide partition has)."""
    return [*maximal_layouts(gpu), (WHOLE,)]


def apply_lines(combo: Combo) -> tuple[str, ...]:
    """One `migpool apply` line per distinct layout, for the GPUs that take it (GPU k: the k-th of the combo)."""
    lines = []
    for lay in sorted(set(combo), key=combo.index):
        counts = OFF if lay == (WHOLE,) else ",".join(f"{n}:{lay.count(n)}" for n in sorted(set(lay), key=lay.index))
        on = " ".join(f"--gpu {k}" for k, other in enumerate(combo) if other == lay)
        lines.append(f"migpool apply {counts} {on}")
    return tuple(lines)


def advise(
    jobs: Sequence[Job],
    gpu: GpuModel,
    gpus: int,
    current: Combo | None = None,
    target_jct: float | None = None,
    dynamic: bool = False,
) -> Advice:
    """The answer for `gpus` GPUs of model `gpu` (`current`: their layouts now, if known; `dynamic`: with dynamic
    MIG's policy replayed, which takes minutes for a few hundred jobs)."""
    layouts = candidates(gpu)
    combo, exhaustive, searched = search(jobs, gpus, layouts)
    ready = Prepared(jobs)
    rows = [Row("advised", combo, outcome(units_of(combo), jobs, ready))]
    if current is not None:
        rows.append(Row("current", current, outcome(units_of(current), jobs, ready)))
    whole = ((WHOLE,),) * gpus
    rows.append(Row("whole GPUs", whole, outcome(units_of(whole), jobs, ready)))
    if dynamic:
        from .dynamic import dynamic_outcome  # the policy's modules take a while to import: only when asked

        rows.append(Row("dynamic MIG", (), dynamic_outcome(jobs, gpu, gpus)))
    target: dict[str, float | int | None] = {}
    if target_jct is not None:
        target = dict(jct=target_jct, **gpus_for(jobs, layouts, target_jct))
    return Advice(
        model=gpu.name,
        gpus=gpus,
        tasks=len(jobs),
        estimated=sum(1 for j in jobs if j.estimated),
        searched=searched,
        exhaustive=exhaustive,
        rows=tuple(rows),
        apply=apply_lines(combo),
        target=target,
    )


def gpus_for(
    jobs: Sequence[Job], layouts: Sequence[tuple[str, ...]], target_jct: float, most: int = 64
) -> dict[str, int | None]:
    """The fewest GPUs whose advised layouts reach a mean JCT of `target_jct` in the event model, and the fewest
    whole GPUs that do (None: not within `most`)."""
    ready = Prepared(jobs)
    whole = _fewest(lambda n: outcome([WHOLE] * n, jobs, ready).mean_jct, target_jct, most)
    mig = _fewest(lambda n: outcome(units_of(search(jobs, n, layouts)[0]), jobs, ready).mean_jct, target_jct, most)
    return dict(mig=mig, whole=whole)


def _fewest(mean_for: Callable[[int], float], target: float, most: int) -> int | None:
    """The least n in 1..most with mean_for(n) <= target (the mean falls as GPUs are added: a doubling search,
    then bisection)."""
    cache: dict[int, float] = {}

    def ok(n: int) -> bool:
        if n not in cache:
            cache[n] = mean_for(n)
        return cache[n] <= target

    hi = 1
    while not ok(hi):
        if hi >= most:
            return None
        hi = min(hi * 2, most)
    lo = hi // 2  # not ok (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi if not math.isinf(cache[hi]) else None
