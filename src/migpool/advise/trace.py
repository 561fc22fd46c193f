"""The workload record (observe/workload.py) as jobs of the event model, for one GPU model.

Tasks are grouped by what ran and its memory need. A task's run time is known on the size it ran on (and, in a trace
written by hand, on the sizes its "also" gives); on every other size that holds its memory it is scaled by its
group's mean run times there (two runs of one function may differ a hundredfold in length, their ratio between sizes
far less). A size its group never ran on is estimated as dynamic MIG estimates it: from the nearest measured size,
the run time falling with the square root of the compute slices (pool/dynamic/costs.py); such a job is marked as
estimated. A whole GPU and the GPU-wide profile (7g on an A100) run a task at the same speed. A profile of another
GPU model counts as this model's profile with as many compute slices.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from ..mig.catalog import GpuModel, Profile
from ..pool.dynamic.costs import root_scaled
from .model import WHOLE, Job


def slices_of(name: str) -> int | None:
    """The compute slices a profile name says ('3g.40gb': 3); None for anything else."""
    head, _, _ = name.partition("g.")
    return int(head) if head.isdigit() else None


def sizes(gpu: GpuModel, need_mib: float | None) -> list[Profile]:
    """The plain profiles of `gpu` that hold `need_mib`, fewest slices first."""
    return sorted(
        (p for p in gpu.profiles if p.plain and (need_mib is None or p.memory_mib >= need_mib)),
        key=lambda p: (p.slices, p.memory_mib),
    )


def to_model(name: str, fits: list[Profile], gpu: GpuModel) -> str | None:
    """The profile of `fits` (or WHOLE) that a recorded profile `name` stands for on `gpu`."""
    if name == WHOLE or any(p.name == name for p in fits):
        return name
    n = slices_of(name)
    if n is None:
        return None
    if n >= gpu.compute_slices:
        return WHOLE
    return next((p.name for p in fits if p.slices == n), None)


def jobs_from_records(records: Iterable[Mapping[str, Any]], gpu: GpuModel) -> list[Job]:
    """The records (observe.workload.read) as jobs on `gpu`, arrivals from the first (seconds), in arrival
    order. A task whose memory no profile of `gpu` holds runs on whole GPUs only."""
    rows = sorted(records, key=lambda r: r["arrival"])
    if not rows:
        return []
    t0 = rows[0]["arrival"]
    groups: dict[tuple[str, float | None], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    fits_of: dict[float | None, list[Profile]] = {}
    placed: list[tuple[Mapping[str, Any], str | None]] = []
    named: dict[tuple[str, float | None], str | None] = {}  # to_model() of (recorded profile, need)
    for r in rows:
        need = r["need_mib"]
        fits = fits_of.get(need)
        if fits is None:
            fits = fits_of[need] = sizes(gpu, need)
        here = named.get((r["profile"], need), "")
        if here == "":
            here = named[(r["profile"], need)] = to_model(r["profile"], fits, gpu)
        placed.append((r, here))
        if here is not None:
            groups[(r["fn"], need)][here].append(r["seconds"])
            for name, other in r.get("also", {}).items():
                there = to_model(name, fits, gpu)
                if there is not None:
                    groups[(r["fn"], need)][there].append(other)
    full = _full_profile(gpu)
    means = {key: _with_whole({p: statistics.fmean(v) for p, v in by.items()}, full) for key, by in groups.items()}
    plans: dict[tuple[Any, ...], tuple[list[tuple[str, int, float, float, float]], frozenset[str]]] = {}
    out = []
    for r, here in placed:
        need = r["need_mib"]
        fits = fits_of[need]
        known = means.get((r["fn"], need), {})
        if here is None or here not in known:
            continue  # ran on a size this model has no counterpart of: nothing to scale from
        own = {here: r["seconds"]}
        for name, s in r.get("also", {}).items():
            there = to_model(name, fits, gpu)
            if there is not None:
                own[there] = s
        own = _with_whole(own, full)
        key = (r["fn"], need, here, *own)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = _plan(here, known, own, fits, gpu)
        steps, guessed = plan
        ran = r["seconds"]
        seconds: dict[str, float] = {}
        for name, how, theirs, mine, root in steps:
            if how == _OWN:
                seconds[name] = own[name]
            else:  # (a group timed at 0 s on `here`, too short for the record's 0.1 ms: the group's time there)
                scaled = ran * theirs / mine if mine else theirs
                seconds[name] = scaled if how == _SCALED else scaled * root  # as root_scaled() guesses it
        out.append(Job(r["arrival"] - t0, seconds, r["fn"], guessed))
    return out


_OWN, _SCALED, _GUESSED = 0, 1, 2  # how _plan() has a job's run time on a size found


def _plan(
    here: str, known: Mapping[str, float], own: Mapping[str, float], fits: list[Profile], gpu: GpuModel
) -> tuple[list[tuple[str, int, float, float, float]], frozenset[str]]:
    """How the run time of a task that ran on `here` is found on each size, the same for every task of its group
    with the same sizes measured (`own`): (size, how, the group's mean there or at the nearest measured size, its
    mean on `here`, the square-root factor of a guess), and the sizes guessed."""
    slices = {p.name: p.slices for p in fits} | {WHOLE: gpu.compute_slices}
    measured = [n for n in slices if n in known]
    steps: list[tuple[str, int, float, float, float]] = []
    guessed: set[str] = set()
    for name, n in slices.items():
        if name in own:
            steps.append((name, _OWN, 0.0, 1.0, 1.0))
        elif name in known:
            steps.append((name, _SCALED, known[name], known[here], 1.0))
        else:
            near = min(measured, key=lambda m: (abs(slices[m] - n), slices[m]))
            root = root_scaled(1.0, slices[near], n)
            steps.append((name, _GUESSED, known[near], known[here], root))
            guessed.add(name)
    return steps, frozenset(guessed)


def _full_profile(gpu: GpuModel) -> str | None:
    """The plain profile that takes the whole GPU, if any."""
    return next((p.name for p in gpu.profiles if p.plain and p.slices == gpu.compute_slices), None)


def _with_whole(means: dict[str, float], full: str | None) -> dict[str, float]:
    """A whole GPU's figure stands for the GPU-wide profile's, and the other way round, where one is missing."""
    if full is not None:
        if WHOLE in means and full not in means:
            means[full] = means[WHOLE]
        elif full in means and WHOLE not in means:
            means[WHOLE] = means[full]
    return means
