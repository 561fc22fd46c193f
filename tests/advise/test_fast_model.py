"""The event model's fast path (completion_times, its cut-off, Search.best) gives what dispatch() and a plain
ranking give, and the futures advise scores layouts on are drawn as documented."""

import itertools
import math
import random

from test_advise import records

from migpool.advise.futures import RATES, futures, rates
from migpool.advise.model import (
    WHOLE,
    Prepared,
    Search,
    completion_times,
    dispatch,
    maximal_layouts,
    total_jct,
    units_of,
)
from migpool.advise.trace import jobs_from_records
from migpool.mig import catalog

GPU = catalog.lookup("A100-80GB")
LAYOUTS = maximal_layouts(GPU)


def traces():
    """Hand traces of the event model: 40 jobs, and the same squeezed into a busy quarter of the time."""
    for seed in (1, 2, 3):
        jobs = jobs_from_records(records(40, seed), GPU)
        yield jobs
        yield futures(jobs, len(jobs), count=1)[0]  # one future: arrivals resampled
        yield [type(j)(j.arrival / 4, j.seconds, j.name) for j in jobs]


def test_completion_times_are_dispatchs():
    rng = random.Random(7)
    for trace in traces():
        ready = Prepared(trace)
        for _ in range(25):
            combo = tuple(rng.choice([*LAYOUTS, (WHOLE,)]) for _ in range(rng.randint(1, 3)))
            units = units_of(combo)
            want = dispatch(units, trace)
            got = completion_times(units, ready)
            assert got is not None and len(got) == len(want)
            assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(got, want, strict=True))
            total = math.fsum(want)
            assert total_jct(units, ready) == (math.inf if math.isnan(total) else total)


def test_a_job_no_partition_holds_never_runs():
    trace = jobs_from_records(records(40, 1), GPU)  # `big` needs 20 GB: no 1g.10gb holds it
    got = completion_times(["1g.10gb"] * 7, Prepared(trace))
    big = [j.name == "big" for j in trace]
    assert got is not None and any(big) and [math.isnan(t) for t in got] == big
    assert total_jct(["1g.10gb"] * 7, Prepared(trace)) == math.inf


def test_the_cut_off_stops_only_past_the_bound():
    trace = jobs_from_records(records(40, 2), GPU)
    ready = Prepared(trace)
    for combo in LAYOUTS[::3]:
        total = total_jct(list(combo), ready)
        if math.isinf(total):
            continue  # a job it never runs
        assert total_jct(list(combo), ready, stop_above=total) == total
        assert total_jct(list(combo), ready, stop_above=total * 1.0000001) == total
        if total > ready.floor * 1.001:  # a bound below the sum: cut off (always, once every job has ended)
            assert completion_times(list(combo), ready, stop_above=total * 0.999) is None


def test_the_best_with_cut_offs_is_the_least_of_every_score():
    jobs = jobs_from_records(records(40, 3), GPU)
    for several, trace in ((False, jobs), (True, futures(jobs, len(jobs), count=4))):
        combos = list(itertools.combinations_with_replacement(LAYOUTS, 2))[::7]
        exact = Search(trace, LAYOUTS, several=several)
        want = min((exact.score(c), c) for c in combos)
        quick = Search(trace, LAYOUTS, several=several)
        assert quick.best(combos) == want
        assert len(quick.scored) < len(combos)  # some were cut off before their end


def test_futures_are_resampled_jobs_at_rates_from_half_to_one_and_a_half():
    jobs = jobs_from_records(records(40, 4), GPU)
    gaps = sorted(b.arrival - a.arrival for a, b in itertools.pairwise(jobs))
    drawn = futures(jobs, 25, count=5)
    assert drawn == futures(jobs, 25, count=5)  # seeded: one record, one advice
    assert rates(5) == [0.5, 0.75, 1.0, 1.25, 1.5] and (min(rates()), max(rates())) == RATES
    for rate, future in zip(rates(5), drawn, strict=True):
        assert len(future) == 25 and future[0].arrival == 0.0
        assert all(any(j.seconds is k.seconds for k in jobs) for j in future)  # run times kept, not made up
        for a, b in itertools.pairwise(future):
            gap = (b.arrival - a.arrival) * rate
            assert any(math.isclose(gap, g, rel_tol=1e-9, abs_tol=1e-9) for g in gaps)


def test_a_search_over_futures_of_jobs_that_take_no_time_or_of_none_scores_them():
    """Review: with every job at 0 s (or no job), each future's least factor is 0, and the bound Search.score
    gives the first future (the bound over the product of the others') divided by zero."""
    from migpool.advise.answer import search
    from migpool.advise.model import Job

    instant = [Job(float(k), {"1g.10gb": 0.0, "7g.80gb": 0.0, WHOLE: 0.0}) for k in range(5)]
    for jobs in (instant, []):
        combo, exhaustive, drawn = search(jobs, 2, LAYOUTS)
        assert exhaustive and drawn == len(jobs) and len(combo) == 2
