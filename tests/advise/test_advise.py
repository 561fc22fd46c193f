"""`migpool advise` on small hand traces: the layout a brute force finds, the JSON shape, --target-jct, and apply
lines that migpool's own layout parser reads back."""

import itertools
import json
import math
import random
import statistics

from migpool_cli import mp

from migpool.advise.answer import advise, apply_lines, search
from migpool.advise.futures import futures
from migpool.advise.model import WHOLE, maximal_layouts, units_of
from migpool.advise.trace import jobs_from_records
from migpool.mig import catalog
from migpool.mig.layout import Layout


def records(n=40, seed=5):
    """Two functions: `small` runs as fast on one slice as on seven (it cannot use more), `big` speeds up with
    the slices and needs 20 GB; each ran on a random size, arrivals about every 30 s."""
    rng = random.Random(seed)
    t = 1.7e9
    out = []
    for k in range(n):
        t += rng.expovariate(1 / 30)
        big = k % 4 == 0
        prof = rng.choice(["2g.20gb", "3g.40gb", "7g.80gb"] if big else ["1g.10gb", "2g.20gb", "4g.40gb", "7g.80gb"])
        slices = int(prof[0])
        seconds = (600 / slices if big else 200) * rng.uniform(0.9, 1.1)
        out.append(
            dict(
                fn="big" if big else "small",
                need_mib=20480.0 if big else None,
                arrival=t,
                profile=prof,
                seconds=seconds,
            )
        )
    return out


def naive_mean(units, jobs):
    """The event model written plainly: at every arrival and end, the waiting jobs in arrival order each take the
    free partition that runs them fastest (lowest index on a tie)."""
    busy_until = [0.0] * len(units)
    waiting: list[int] = []
    ends = {}
    pending = sorted(range(len(jobs)), key=lambda k: jobs[k].arrival)
    now = 0.0
    while pending or waiting:
        nxt = [*(jobs[k].arrival for k in pending[:1]), *(b for b in busy_until if b > now)]
        now = min(nxt) if nxt else now
        while pending and jobs[pending[0]].arrival <= now:
            waiting.append(pending.pop(0))
        for k in list(waiting):
            fit = [i for i, u in enumerate(units) if busy_until[i] <= now and u in jobs[k].seconds]
            if fit:
                i = min(fit, key=lambda i: (jobs[k].seconds[units[i]], i))
                busy_until[i] = now + jobs[k].seconds[units[i]]
                ends[k] = busy_until[i]
                waiting.remove(k)
        if not pending and waiting and all(b <= now for b in busy_until):
            return math.inf
    return sum(ends[k] - jobs[k].arrival for k in range(len(jobs))) / len(jobs)


def test_the_layout_fitted_to_the_record_is_what_a_brute_force_finds():
    gpu = catalog.lookup("A100-80GB")
    jobs = jobs_from_records(records(), gpu)
    lays = maximal_layouts(gpu)
    combo, exhaustive, _ = search(jobs, 2, lays, robust=False)
    brute = min(
        naive_mean([u for lay in c for u in lay], jobs) for c in itertools.combinations_with_replacement(lays, 2)
    )
    assert exhaustive and math.isclose(naive_mean(units_of(combo), jobs), brute, rel_tol=1e-9)
    whole = next(r for r in advise(jobs, gpu, 2).rows if r.name == "whole GPUs")
    assert whole.layouts == ((WHOLE,), (WHOLE,)) and whole.expected.mean_jct > 1.5 * brute  # MIG pays here


def test_the_advised_layout_is_the_best_over_the_futures_by_brute_force():
    """advise() chooses by the geometric mean, over futures drawn from the record, of the mean JCT over the
    least possible one: the same choice as the plain model above over every layout finds."""
    gpu = catalog.lookup("A100-80GB")
    jobs = jobs_from_records(records(), gpu)
    drawn = futures(jobs, len(jobs))

    def robust(combo):
        product = 1.0
        for f in drawn:
            product *= naive_mean(units_of(combo), f) / statistics.fmean(min(j.seconds.values()) for j in f)
        return product

    brute = min(robust((lay,)) for lay in maximal_layouts(gpu))
    got = advise(jobs, gpu, 1)
    assert got.exhaustive and math.isclose(robust(got.best.layouts), brute, rel_tol=1e-9)
    assert math.isclose(got.best.expected.mean_jct, naive_mean(units_of(got.best.layouts), jobs), rel_tol=1e-9)


def test_unmeasured_sizes_are_estimated_and_marked():
    gpu = catalog.lookup("A100-80GB")
    jobs = jobs_from_records(records(), gpu)
    small = next(j for j in jobs if j.name == "small")
    assert "3g.40gb" in small.estimated and "1g.10gb" not in small.estimated  # small never ran on a 3g
    big = next(j for j in jobs if j.name == "big")
    assert "1g.10gb" not in big.seconds  # 10 GB does not hold its 20 GB


def test_apply_lines_parse_back():
    combo = (("1g.10gb",) * 7, ("3g.40gb", "4g.40gb"), ("1g.10gb",) * 7)
    lines = apply_lines(combo)
    assert lines == (
        "migpool apply 1g.10gb:7 --gpu 0 --gpu 2",
        "migpool apply 3g.40gb:1,4g.40gb:1 --gpu 1",
    )
    for line, lay in zip(lines, (combo[0], combo[1]), strict=True):
        assert dict(Layout.of(line.split()[2]).counts) == {n: lay.count(n) for n in set(lay)}
        r = mp(*line.split()[1:], "--dry-run", "--simulate", "A100-80GB:3", check=0)  # apply itself reads it
        assert "operation(s)" in r.stdout


def test_json_and_target_jct(tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in records()))
    r = mp(
        "advise", "--trace", str(trace), "--model", "A100-80GB", "--gpus", "2", "--json", "--target-jct", "400", check=0
    )
    got = json.loads(r.stdout)
    assert set(got) >= {"model", "gpus", "tasks", "estimated_tasks", "advised", "choices", "apply", "target"}
    assert got["tasks"] == 40 and len(got["advised"]) == 2
    assert set(got["choices"]) == {"advised", "whole GPUs"}
    assert set(got["choices"]["advised"]) == {"layouts", "mean_jct", "p95_jct", "makespan"}
    t = got["target"]
    assert t["jct"] == 400 and 1 <= t["mig"] <= t["whole"]
    gpu = catalog.lookup("A100-80GB")
    jobs = jobs_from_records(records(), gpu)
    fewer = advise(jobs, gpu, t["mig"] - 1).best.expected.mean_jct if t["mig"] > 1 else math.inf
    assert advise(jobs, gpu, t["mig"]).best.expected.mean_jct <= 400 < fewer
    text = mp("advise", "--trace", str(trace), "--model", "A100-80GB", "--gpus", "2", check=0).stdout
    assert "migpool apply" in text and "whole GPUs" in text and all(len(x) <= 80 for x in text.splitlines())


def test_refusals_are_one_line(tmp_path):
    r = mp("advise", "--model", "A100-80GB")
    assert r.returncode == 2 and r.stderr.startswith("error: give --model and --gpus together")
    r = mp("advise", "--model", "A100-80GB", "--gpus", "2")
    assert r.returncode == 2 and "no workload record" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_dynamic_mig_is_replayed_on_request():
    gpu = catalog.lookup("A100-80GB")
    jobs = jobs_from_records(records(8), gpu)
    rows = {r.name: r for r in advise(jobs, gpu, 1, dynamic=True).rows}
    assert "dynamic MIG" not in {r.name for r in advise(jobs, gpu, 1).rows}
    got = rows["dynamic MIG"].expected
    fastest = sum(min(j.seconds.values()) for j in jobs) / len(jobs)
    assert math.isfinite(got.mean_jct) and got.mean_jct >= fastest


def test_a_record_of_tasks_too_short_to_time_is_advised_on(tmp_path):
    """Review: the workload record writes run times to 0.1 ms, so a function whose tasks take less is recorded at
    0 s on every size it ran on; scaling a task by its group's mean there divided by zero (a traceback)."""
    rows = [
        dict(fn="tiny", need_mib=None, arrival=1.7e9 + k, profile=("1g.10gb" if k % 2 else "3g.40gb"), seconds=0.0)
        for k in range(20)
    ]
    gpu = catalog.lookup("A100-80GB")
    jobs = jobs_from_records(rows + records(20), gpu)
    tiny = [j for j in jobs if j.name == "tiny"]
    assert len(tiny) == 20 and all(s == 0.0 for j in tiny for s in j.seconds.values())
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows + records(20)))
    r = mp("advise", "--trace", str(trace), "--model", "A100-80GB", "--gpus", "1", "--json", check=0)
    assert json.loads(r.stdout)["tasks"] == 40


def test_a_task_only_a_whole_gpu_holds_is_not_advised_a_layout_that_never_runs_it():
    gpu = catalog.lookup("A100-80GB")
    rows = records(20) + [
        dict(fn="huge", need_mib=81920.0, arrival=1.7e9 + 30 * k, profile="whole", seconds=30.0) for k in range(4)
    ]
    jobs = jobs_from_records(rows, gpu)
    assert sum(j.name == "huge" for j in jobs) == 4
    answer = advise(jobs, gpu, 2)
    whole = next(r for r in answer.rows if r.name == "whole GPUs")
    assert math.isfinite(whole.expected.mean_jct)
    assert math.isfinite(answer.best.expected.mean_jct)  # (was: 1g.10gb x7 on both GPUs, "never")
    assert (WHOLE,) in answer.best.layouts  # the GPU the huge tasks run on has MIG off
    k = answer.best.layouts.index((WHOLE,))
    assert f"migpool apply off --gpu {k}" in answer.apply
