"""Dynamic MIG vs fixed layouts on a seeded synthetic trace, on 1 and 4 simulated A100-80GB GPUs, in one run.

Jobs of three classes arrive over time: small (needs 1g.10gb), medium (3g.40gb), large (7g.80gb). A job may run
on any partition with at least the memory its class needs; it sleeps work ÷ (the SMs it can use): the partition's
SMs, up to twice what its class's profile has (a small inference job cannot fill a whole A100, which is why MIG
exists; with unlimited linear scaling, one job on a whole GPU would always finish first). The simulated GPUs charge hardware latencies for GPU-instance creation
(92 ms) and destruction (142 ms) (MIGPOOL_SIM_LATENCY=hardware). THE TIME MODEL IS SIMULATED: sleeps stand for work.

  (a) dynamic:      mig(dynamic=True), each job asks for its class's profile; run for real
  (b) best static:  every layout the planner can make per GPU (maximal ones), every combination over the GPUs,
                    scored by an event model of the same dispatch; the best by mean job completion time is then
                    run for real (its layout made before the trace starts, not counted)
  (c) whole GPUs:   no MIG, one job per GPU (108 SMs); run for real
Traces: "changing" (the mix moves from small to medium to large jobs) and "steady" (small jobs only).
Goals: on the changing mix, mean JCT of (a) ≥ 16% lower than (b) and ≥ 40% lower than (c); on the steady mix,
(a) never more than 5% worse than (b).      python benchmarks/dynamic.py
Not measured yet: (d) drain-and-recreate (mig-parted's way).
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass

import migpool as sky
from migpool import catalog
from migpool.planner import max_addable

GPU = catalog.lookup("A100-80GB")
WHOLE_SMS = GPU.sms
NEED = {"small": "1g.10gb", "medium": "3g.40gb", "large": "7g.80gb"}
SECONDS_ON_NEED = {"small": 0.4, "medium": 0.8, "large": 1.0}  # run time on the class's own profile


@dataclass(frozen=True)
class Job:
    arrival: float
    cls: str

    @property
    def need(self) -> str:
        return NEED[self.cls]

    @property
    def work(self) -> float:
        return SECONDS_ON_NEED[self.cls] * GPU.profile(self.need).sms


def trace(kind: str, gpus: int, seed: int = 7) -> list[Job]:
    rng = random.Random(seed)
    phases = ([(3.0, {"small": 10, "medium": 0.5}), (3.0, {"medium": 2.0, "small": 2}), (3.0, {"large": 0.6, "small": 2})]
              if kind == "changing" else [(9.0, {"small": 12})])
    jobs, t0 = [], 0.0
    for length, rates in phases:
        for cls, rate in rates.items():
            t = t0
            while True:
                t += rng.expovariate(rate * gpus)
                if t >= t0 + length:
                    break
                jobs.append(Job(round(t, 3), cls))
        t0 += length
    return sorted(jobs, key=lambda j: j.arrival)


def usable_sms(partition_sms: int, cls: str) -> int:
    return min(partition_sms, 2 * GPU.profile(NEED[cls]).sms)


@sky.function
def run_job(work: float, whole_sms: int, cls: str) -> tuple[str, int]:
    info = sky.instance_info()
    if info.partition is None:
        sms, name = whole_sms, "whole"
    else:
        name = info.partition.profile
        sms = catalog.lookup("A100-80GB").profile(name).sms
    time.sleep(work / usable_sms(sms, cls))
    return name, sms


# --- the event model for static layouts ---
def model(units: list[str], jobs: list[Job]) -> list[float]:
    """JCTs when jobs, in arrival order, take the earliest-free partition with enough memory (smallest first)."""
    free = [0.0] * len(units)
    mem = [GPU.profile(u).memory_mib for u in units]
    sms = [GPU.profile(u).sms for u in units]
    out = []
    for j in jobs:
        need = GPU.profile(j.need).memory_mib
        ok = [i for i in range(len(units)) if mem[i] >= need]
        if not ok:
            return []
        i = min(ok, key=lambda i: (max(free[i], j.arrival), mem[i]))
        start = max(free[i], j.arrival)
        free[i] = start + j.work / usable_sms(sms[i], j.cls)
        out.append(free[i] - j.arrival)
    return out


def layouts() -> list[tuple[str, ...]]:
    """Every maximal layout of one GPU (nothing more fits), as sorted profile names."""
    names = [p.name for p in GPU.profiles if not p.name.endswith("+me")]
    found: set[tuple[str, ...]] = set()

    def grow(current: list[str]) -> None:
        from migpool.planner import plan

        placed = plan(GPU, {n: current.count(n) for n in set(current)}) if current else []
        more = [n for n in names if max_addable(GPU, GPU.profile(n), placed) > 0]
        if not more:
            found.add(tuple(sorted(current)))
            return
        for n in more:
            if not current or n >= current[-1]:
                grow(current + [n])

    grow([])
    return sorted(found)


def best_static(jobs: list[Job], gpus: int) -> tuple[tuple[tuple[str, ...], ...], float]:
    best = None
    for combo in itertools.combinations_with_replacement(layouts(), gpus):
        jct = model([u for lay in combo for u in lay], jobs)
        if jct and (best is None or statistics.mean(jct) < best[1]):
            best = (combo, statistics.mean(jct))
    assert best is not None
    return best


# --- real runs ---
def replay(compute: sky.Compute, jobs: list[Job], choose) -> list[tuple[float, float, str]]:
    """Submit each job at its arrival time; `choose(job)` gives the .on() profile (None: any worker)."""
    results: list[tuple[float, float, str]] = [None] * len(jobs)  # type: ignore[list-item]
    start = time.perf_counter()
    futs = []
    for k, j in enumerate(jobs):
        delay = j.arrival - (time.perf_counter() - start)
        if delay > 0:
            time.sleep(delay)
        task = run_job(j.work, WHOLE_SMS, j.cls)
        profile = choose(j)
        fut = compute.submit(task.on(profile) if profile else task)

        def done(f, k=k, j=j):
            results[k] = (j.arrival, time.perf_counter() - start, f.result()[0])

        fut.add_done_callback(done)
        futs.append(fut)
    for f in futs:
        f.result()
    return results


class StaticDispatch:
    """The static pool's dispatcher: a job takes the smallest free partition with enough memory, else waits."""

    def __init__(self, compute: sky.Compute) -> None:
        self.free: dict[str, int] = {}
        for p in compute.partitions:
            self.free[p.profile] = self.free.get(p.profile, 0) + 1
        self.cv = threading.Condition()

    def run(self, compute: sky.Compute, jobs: list[Job]) -> list[tuple[float, float, str]]:
        results = [None] * len(jobs)
        start = time.perf_counter()
        waiting: list[tuple[int, Job]] = []
        futs = []

        def pick(j: Job) -> str | None:
            need = GPU.profile(j.need).memory_mib
            ok = [n for n, c in self.free.items() if c > 0 and GPU.profile(n).memory_mib >= need]
            return min(ok, key=lambda n: GPU.profile(n).memory_mib) if ok else None

        def launch(k: int, j: Job, name: str) -> None:
            self.free[name] -= 1
            fut = compute.submit(run_job(j.work, WHOLE_SMS, j.cls).on(name))

            def done(f, k=k, j=j, name=name):
                with self.cv:
                    results[k] = (j.arrival, time.perf_counter() - start, name)
                    self.free[name] += 1
                    for item in list(waiting):
                        n = pick(item[1])
                        if n:
                            waiting.remove(item)
                            launch(item[0], item[1], n)

            futs.append(fut)
            fut.add_done_callback(done)

        for k, j in enumerate(jobs):
            delay = j.arrival - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
            with self.cv:
                name = pick(j)
                if name and not waiting:
                    launch(k, j, name)
                else:
                    waiting.append((k, j))
        while True:
            with self.cv:
                if all(r is not None for r in results):
                    break
            time.sleep(0.01)
        return results  # type: ignore[return-value]


def summary(results: list[tuple[float, float, str]], gpus: int, jobs: list[Job]) -> dict[str, float]:
    jct = sorted(end - arrival for arrival, end, _ in results)
    makespan = max(end for _, end, _ in results) - min(a for a, _, _ in results)
    busy = sum(j.work / usable_sms(WHOLE_SMS if name == "whole" else GPU.profile(name).sms, j.cls)
               * (GPU.compute_slices if name == "whole" else GPU.profile(name).slices)
               for j, (_, _, name) in zip(jobs, results))
    return dict(mean=statistics.mean(jct), p95=jct[int(0.95 * (len(jct) - 1))], makespan=makespan,
                util=busy / (makespan * GPU.compute_slices * gpus))


def main() -> None:
    os.environ["MIGPOOL_SIM_LATENCY"] = "hardware"
    for gpus in (1, 4):
        for kind in ("changing", "steady"):
            jobs = trace(kind, gpus)
            os.environ["MIGPOOL_STATE_DIR"] = tempfile.mkdtemp()
            spec = f"A100-80GB:{gpus}"
            rows = {}
            with sky.Compute(provider=sky.Local(simulate=spec), worker=sky.Worker(executor="process"),
                             plugins=[sky.plugins.mig(dynamic=True, gpus="all")], progress=False) as c:
                rows["(a) dynamic"] = summary(replay(c, jobs, lambda j: j.need), gpus, jobs)
                changes = len(c.changes)
            combo, modeled = best_static(jobs, gpus)
            os.environ["MIGPOOL_STATE_DIR"] = tempfile.mkdtemp()
            layout = [{n: lay.count(n) for n in set(lay)} for lay in combo]
            with sky.Compute(provider=sky.Local(simulate=spec), worker=sky.Worker(executor="process"),
                             plugins=[StaticLayout(layout)], progress=False) as c:
                rows["(b) best static"] = summary(StaticDispatch(c).run(c, jobs), gpus, jobs)
            os.environ["MIGPOOL_STATE_DIR"] = tempfile.mkdtemp()
            with sky.Compute(provider=sky.Local(simulate=spec), worker=sky.Worker(concurrency=gpus, executor="process"),
                             plugins=[sky.plugins.gpus("all")], progress=False) as c:
                rows["(c) whole GPUs"] = summary(replay(c, jobs, lambda j: None), gpus, jobs)
            print(f"\n{gpus} × A100-80GB, {kind} mix, {len(jobs)} jobs; dynamic made {changes} change(s); best static "
                  f"layout: {' | '.join('+'.join(lay) for lay in combo)} (modeled mean JCT {modeled:.2f} s)")
            print(f"  {'strategy':<16} {'mean JCT':>9} {'p95 JCT':>9} {'makespan':>9} {'slice util':>10}   dynamic's mean ×")
            for name, r in rows.items():
                ratio = rows["(a) dynamic"]["mean"] / r["mean"]
                print(f"  {name:<16} {r['mean']:>8.2f}s {r['p95']:>8.2f}s {r['makespan']:>8.2f}s {r['util']:>9.0%}   ×{ratio:.2f}")


class StaticLayout(sky.plugins.Plugin):
    """A fixed per-GPU layout (GPU i gets layouts[i]), one worker per partition."""

    def __init__(self, layouts: list[dict[str, int]]) -> None:
        self.inner = sky.plugins.mig(layout=layouts[0], gpus="all")
        self.layouts = layouts

    def validate(self, node):
        pass

    def bootstrap(self, node):
        from migpool.layout import GpuLayout, Layout, MachineLayout
        from migpool.pool.info import Partition
        from migpool.reconcile import apply

        desired = MachineLayout(tuple(GpuLayout(Layout.of(lay), (i,)) for i, lay in enumerate(self.layouts)))
        apply(desired, node.backend)
        node.partitions = [Partition(uuid=d.uuid, profile=d.profile_name, gpu_index=g.index, gpu_uuid=g.uuid,
                                     memory_mib=d.memory_mib, gi_id=d.gi_id, ci_id=d.ci_id)
                           for g in node.backend.gpus() for d in node.backend.mig_devices(g.index)]

    def around_process(self, worker):
        return self.inner.around_process(worker)


if __name__ == "__main__":
    main()
