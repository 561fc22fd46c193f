"""Plausible futures of a recorded workload, for choosing a layout that predicts rather than fits.

A layout chosen for exactly the work recorded fits its accidents: which jobs happened to come, and how busy that
stretch was. The work to come is drawn instead as several futures from the record: each a bootstrap resample of
its jobs (drawn with replacement, their run times kept) arriving with gaps resampled from the recorded gaps and
divided by a rate factor, spread evenly over RATES (the work to come may be lighter or busier than the record).
The draws are seeded, so one record always gives the same futures and the same advice.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .model import Job, Timed

COUNT = 9  # futures drawn
RATES = (0.5, 1.5)  # the least and the most arrival rate of a future, as a factor of the record's
SEED = 45


def rates(count: int = COUNT) -> list[float]:
    """`count` arrival rate factors spread evenly over RATES, both ends included, lightest first."""
    lo, hi = RATES
    if count == 1:
        return [1.0]
    return [lo + (hi - lo) * k / (count - 1) for k in range(count)]


def futures(jobs: Sequence[Timed], size: int, count: int = COUNT, seed: int = SEED) -> list[list[Job]]:
    """`count` futures of `size` jobs each drawn from `jobs`, the k-th at the k-th of rates()."""
    if not jobs:
        return [[] for _ in range(count)]
    arrivals = sorted(j.arrival for j in jobs)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)] or [0.0]
    rng = random.Random(seed)
    out = []
    for rate in rates(count):
        drawn = rng.choices(jobs, k=size)
        steps = rng.choices(gaps, k=size)
        t = 0.0
        future = []
        for k, j in enumerate(drawn):
            if k:
                t += steps[k] / rate
            future.append(Job(t, j.seconds, getattr(j, "name", ""), getattr(j, "estimated", frozenset())))
        out.append(future)
    return out
