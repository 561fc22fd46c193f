"""`migpool advise` judged on work it did not see, and timed.

1. Held out: each MISO run (benchmarks/data/miso.json: readme and default, seeds 1-8) is cut in two by arrival.
   The first half, as a trace in migpool's workload record format (miso_convert.records(); its 1g.10gb times
   are not in MISO's data, so advise estimates them), goes through what `migpool advise` does (the record read
   back, the search it runs); the layout it advises is then scored by the event model on the second half, against
   the best static layout in hindsight for that half (every combination: model.best_static) and whole GPUs. The
   second half is scored as benchmarks/miso.py scores its jobs (1g.10gb at 1g.5gb's speed, or half 2g.10gb's).
   Goals: geometric mean of advised / hindsight at most 1.05 over the 48 draws (2 runs x 8 seeds x 1, 2, 4 GPUs);
   advised / whole GPUs at most 1.05 on every one. Beside it, the layout fitted to the first half alone
   (answer.search(robust=False): the best in the event model on exactly the jobs seen), as advise chose before.
2. GPU count: on MISO's default run (seed 1, all 100 jobs), for the mean JCT that 2, 4 and 8 whole GPUs give, the
   fewest GPUs with advised layouts that reach it (answer.gpus_for, as --target-jct).
3. Speed: `migpool advise --json` for 8 A100-80GB and a record of 10,000 tasks (20 functions, sizes measured on a
   few profiles each), wall and CPU time of the whole command in a fresh Python, its modules compiled beforehand
   (as installed). Goal: under 2 s wall.
    python benchmarks/advise.py [--seeds 1-8] [--gpus 1,2,4] [--trace readme,default] [--skip-held-out]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miso import GPU, _seed_list, jobs
from miso_convert import records

from migpool.advise.answer import candidates, gpus_for, search
from migpool.advise.model import WHOLE, best_static, dispatch, mean, units_of
from migpool.advise.trace import jobs_from_records

LAYOUTS = candidates(GPU)  # every maximal layout, and MIG off


def held_out_case(name: str, gpus: int, seed: int) -> dict[str, float]:
    first = records(name, seed)
    half = len(first) // 2
    seen = jobs_from_records(first[:half], GPU)
    advised, _, _ = search(seen, gpus, LAYOUTS)
    fitted, _, _ = search(seen, gpus, LAYOUTS, robust=False)
    second = jobs(name, seed=seed)[half:]
    hindsight, best = best_static(second, gpus, LAYOUTS)
    return dict(
        advised=mean(dispatch(units_of(advised), second)),
        fitted=mean(dispatch(units_of(fitted), second)),
        hindsight=best,
        whole=mean(dispatch([WHOLE] * gpus, second)),
    )


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def held_out(names: list[str], counts: list[int], seeds: list[int]) -> None:
    cases = [(n, g, s) for n in names for g in counts for s in seeds]
    found: dict[tuple[str, int, int], dict[str, float]] = {}
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        running = {pool.submit(held_out_case, *c): c for c in cases}
        for k, done in enumerate(concurrent.futures.as_completed(running), 1):
            found[running[done]] = done.result()
            print(f"  ({k}/{len(cases)} done)", file=sys.stderr, flush=True)
    print("1. Advised on the first half, scored on the second (mean JCT, trace seconds):")
    head = ("run", "GPUs", "seed", "advised", "hindsight", "whole", "/hind.", "/whole")
    print("  {:<8} {:>4} {:>4} {:>9} {:>9} {:>9} {:>7} {:>7}".format(*head))
    to_best, to_whole, fit_best, fit_whole = [], [], [], []
    for n, g, s in cases:
        r = found[(n, g, s)]
        to_best.append(r["advised"] / r["hindsight"])
        to_whole.append(r["advised"] / r["whole"])
        fit_best.append(r["fitted"] / r["hindsight"])
        fit_whole.append(r["fitted"] / r["whole"])
        print(
            f"  {n:<8} {g:>4} {s:>4} {r['advised']:>8.0f}s {r['hindsight']:>8.0f}s {r['whole']:>8.0f}s"
            f" {to_best[-1]:>7.3f} {to_whole[-1]:>7.3f}"
        )
    for what, best, whole in (("advised", to_best, to_whole), ("fitted to the first half alone", fit_best, fit_whole)):
        worse = sum(1 for w in whole if w > 1.05)
        never = sum(1 for b in best if math.isinf(b))
        finite = [b for b in best if not math.isinf(b)]
        print(
            f"  {what}, all {len(cases)}: / hindsight geometric mean {geomean(best):.3f} (goal <= 1.05), worst "
            f"{max(best):.3f}; / whole GPUs geometric mean {geomean(whole):.3f}, worst {max(whole):.3f}, worse "
            f"by more than 5% on {worse} (goal: none)"
            + (
                f"; on {never} a job of the second half fits no partition of the advised layout (never runs); "
                f"the other {len(finite)}: / hindsight geometric mean {geomean(finite):.3f}"
                if never
                else ""
            )
        )


def gpu_count() -> None:
    trace = jobs("default")
    print("2. MISO default (seed 1, 100 jobs): GPUs for the mean JCT of N whole GPUs:")
    for n in (2, 4, 8):
        target = mean(dispatch([WHOLE] * n, trace))
        got = gpus_for(trace, LAYOUTS, target)  # type: ignore[arg-type]
        print(f"  {n} whole GPUs: mean JCT {target:,.0f} s; reached by {got['mig']} GPU(s) with advised layouts")


def speed(tasks: int = 10_000, gpus: int = 8) -> None:
    rng = random.Random(1)
    profiles = ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
    funcs = []
    for k in range(20):
        exponent = rng.uniform(0.1, 0.9)  # how much the function speeds up with slices
        base = rng.uniform(20, 600)
        funcs.append((f"app.f{k}", exponent, base, rng.sample(profiles, 3)))
    t = 1.7e9
    lines = []
    for _ in range(tasks):
        fn, exponent, base, tried = rng.choice(funcs)
        prof = rng.choice(tried)
        t += rng.expovariate(1 / 12)
        seconds = base / int(prof[0]) ** exponent * rng.uniform(0.7, 1.3)
        lines.append(json.dumps(dict(fn=fn, need_mib=None, arrival=t, profile=prof, seconds=seconds)))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "record.jsonl"
        path.write_text("\n".join(lines) + "\n")
        # as an installed migpool runs: its modules compiled once (here into a cache of this run's own)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(d) / "pycache")
        argv = [sys.executable, "-m", "migpool", "advise", "--trace", str(path), "--model", "A100-80GB"]
        argv += ["--gpus", str(gpus), "--json"]
        subprocess.run(argv, capture_output=True, check=True, env=env)  # compiles the modules
        walls, cpus = [], []
        load = os.getloadavg()[0]
        for _ in range(5):
            began, used = time.perf_counter(), _child_cpu()
            r = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
            walls.append(time.perf_counter() - began)
            cpus.append(_child_cpu() - used)
        load = max(load, os.getloadavg()[0])
        got = json.loads(r.stdout)
        used = _child_cpu()
        subprocess.run([sys.executable, "-c", "import migpool.cli.commands"], check=True, env=env)
        startup = _child_cpu() - used
    print(
        f"3. `migpool advise --json`, {gpus} x A100-80GB, {tasks:,} recorded tasks: {min(walls):.2f} s wall, "
        f"{min(cpus):.2f} s CPU (best of 5; median wall {statistics.median(walls):.2f} s, median CPU "
        f"{statistics.median(cpus):.2f} s; load average up to {load:.1f} on {os.cpu_count()} cores; of the CPU "
        f"time, Python and migpool's import {startup:.2f} s; layouts searched on futures drawn from the latest "
        f"{got['searched_tasks']} tasks, exhaustive: {got['exhaustive']}). Goal: under 2 s."
    )


def _child_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="readme,default")
    ap.add_argument("--gpus", default="1,2,4")
    ap.add_argument("--seeds", type=_seed_list, default=list(range(1, 9)))
    ap.add_argument("--skip-held-out", action="store_true")
    args = ap.parse_args()
    if not args.skip_held_out:
        held_out(args.trace.split(","), [int(g) for g in args.gpus.split(",")], args.seeds)
    gpu_count()
    speed()


if __name__ == "__main__":
    main()
