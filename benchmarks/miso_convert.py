"""Convert MISO's published workload (SoCC'22, github.com/boringlee24/socc22-miso, MIT licence) into
benchmarks/data/miso.json, the table benchmarks/miso.py replays.

From a checkout of MISO (commit 39b1ee69d, 2023-04-19) it reads:
- mps/scheduler/trace/trace_100.json: each job's run time, in seconds, on a whole A100-40GB (MISO's 7g.40gb);
- mps/scheduler/simulator/job_models.json: each job's model and batch size (19 configurations);
- mps/models/logs/mig/<slice>_<model>.json: per-iteration latencies measured on each MIG slice of an A100-40GB;
  a missing file means the model does not fit that slice.
A job's time on a slice is its trace time × the slice's mean latency ÷ 7g.40gb's, each mean taken as MISO's
simulator takes it (mps/scheduler/simulator/utils.py: every epoch's latencies in one list, the first dropped,
the mean rounded to 4 decimals).

Arrival times are drawn as MISO's exp_full.py draws them (Python's random seeded with `seed`, NumPy's legacy
generator with `seed + 1`; jobs in a random order; each gap Poisson with mean `arrival`, halved for the first
third of the jobs), for the two runs MISO's README and defaults name: 30 jobs sampled from the trace at 100 s
(run.py --arrival 100 --num_job 30 --random_trace) and all 100 jobs at 60 s (run.py's defaults); seed 1 is
MISO's, seeds 2-8 draw the same runs again (benchmarks/miso.py --seeds). NumPy is needed here only.
    python benchmarks/miso_convert.py /path/to/socc22-miso

--records writes one of those runs from benchmarks/data/miso.json as a trace in migpool's workload record format
(src/migpool/observe/workload.py; `migpool advise --trace FILE`): one line per job, its model as the function,
the memory of the smallest slice that holds it, its 7g.40gb run time, and the other slices' in "also".
    python benchmarks/miso_convert.py --records default [SEED] > miso-default.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SLICES = ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb")
COMMIT = "39b1ee69d73c876c2d2bfca7858806890b27c834"
OUT = Path(__file__).parent / "data" / "miso.json"
RUNS = {"readme": dict(num_job=30, arrival=100, random_trace=True), "default": dict(num_job=100, arrival=60)}
SEEDS = range(1, 9)  # 1: MISO's own; the others, the same runs drawn again


def mean_latency(path: Path) -> float:
    import numpy as np

    lat: list[float] = []
    for values in json.loads(path.read_text()).values():
        lat += values
    return float(round(np.mean(lat[1:]), 4))


def arrivals(trace: dict[str, float], num_job: int, arrival: int, random_trace: bool = False, seed: int = 1):
    """(job id, arrival second) in arrival order, as exp_full.Experiment draws them."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed + 1)
    if random_trace and num_job <= 100:
        runtime = {i: int(trace[str(i)]) for i in random.sample(range(len(trace)), num_job)}
    else:
        runtime = {i: int(trace[str(i % 100)]) for i in range(num_job)}
    order = random.sample(list(runtime), len(runtime))
    out: list[tuple[int, int]] = []
    t = 0
    for job in order:
        rate = arrival / 2 if len(out) <= int(num_job / 3) else arrival
        t += int(np.random.poisson(rate))
        out.append((job, t))
    return out


def records(name: str, seed: int = 1, data: dict | None = None, limit: int | None = None) -> list[dict]:
    """The run `name` drawn with `seed` as workload records (arrivals from 0, in seconds)."""
    from migpool.mig import catalog

    memory = {p.name: p.memory_mib for p in catalog.lookup("A100-40GB").profiles}
    data = data or json.loads(OUT.read_text())
    by_id = {j["id"]: j for j in data["jobs"]}
    out = []
    for jid, arrival in data["arrivals"][name]["seeds"][str(seed)][:limit]:
        seconds = by_id[jid]["seconds"]
        also = {p: s for p, s in seconds.items() if p != "7g.40gb"}
        need = min(memory[p] for p in seconds)
        out.append(
            dict(
                fn=by_id[jid]["model"],
                need_mib=need,
                arrival=float(arrival),
                profile="7g.40gb",
                seconds=seconds["7g.40gb"],
                also=also,
            )
        )
    return out


def main() -> None:
    if sys.argv[1] == "--records":
        for r in records(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1):
            print(json.dumps(r))
        return
    root = Path(sys.argv[1])
    trace = json.loads((root / "mps/scheduler/trace/trace_100.json").read_text())
    models = json.loads((root / "mps/scheduler/simulator/job_models.json").read_text())
    logs = root / "mps/models/logs/mig"
    latency = {
        (s, m): mean_latency(logs / f"{s}_{m}.json")
        for m in set(models.values())
        for s in SLICES
        if (logs / f"{s}_{m}.json").exists()
    }
    jobs = []
    for i in range(len(trace)):
        model = models[str(i)]
        whole = latency[("7g.40gb", model)]
        seconds = {
            s: round(int(trace[str(i)]) * latency[(s, model)] / whole, 3) for s in SLICES if (s, model) in latency
        }
        jobs.append(dict(id=i, model=model, whole=int(trace[str(i)]), seconds=seconds))
    data = dict(
        about=(
            "MISO's workload (SoCC'22, github.com/boringlee24/socc22-miso, commit "
            f"{COMMIT[:9]}): each job's model, its run time in seconds on a whole A100-40GB (trace_100.json, "
            "as MISO's int() reads it), and on each MIG slice of an A100-40GB (that time x the slice's measured "
            "mean iteration latency / 7g.40gb's; a slice missing: the model does not fit it); arrival times of "
            "MISO's two documented runs, by seed (1: MISO's; 2-8: the same runs drawn again). Converted by "
            "benchmarks/miso_convert.py."
        ),
        licence="MIT, Copyright (c) 2022 Baolin Li (see benchmarks/data/MISO-LICENSE)",
        commit=COMMIT,
        gpu="A100-40GB",
        jobs=jobs,
        arrivals={
            name: dict(run, seeds={str(seed): arrivals(trace, **run, seed=seed) for seed in SEEDS})
            for name, run in RUNS.items()
        },
    )
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    (OUT.parent / "MISO-LICENSE").write_text((root / "LICENSE").read_text())
    print(f"wrote {OUT}: {len(jobs)} jobs, {len(latency)} measured (slice, model) pairs")


if __name__ == "__main__":
    main()
