"""Dynamic MIG vs fixed and reconfigured layouts on a seeded synthetic trace, on 1 and 4 simulated A100-80GB GPUs.

Jobs of three classes arrive over time: small (needs the memory of a 1g.10gb), medium (3g.40gb), large (7g.80gb).
Every strategy knows only that memory need; a job runs on any partition holding it, and sleeps work ÷ (the SMs it
can use): the partition's SMs, up to twice what its class's profile has (a small inference job cannot fill a whole
A100, which is why MIG exists; with unlimited linear scaling, one job on a whole GPU would always finish first).
The simulated GPUs charge hardware latencies for GPU-instance creation (92 ms) and destruction (142 ms)
(MIGPOOL_SIM_LATENCY=hardware). THE TIME MODEL IS SIMULATED: sleeps stand for work.

  (a) dynamic:      mig(dynamic=True, remember=False), each job asks for its class's memory (`min_memory=`): it
                    starts knowing nothing and learns which size each class runs best on; run for real
  (a') dynamic, learned: the same, starting from the run times that an earlier pool learned (`remember=` a file)
                    on a trace of the same kind drawn with another seed (that run not timed); run for real.
                    With --repeat N, (a) and (a') run N times each (each (a') run from the same learned file): the
                    run with the median mean JCT is shown, and the spread.
  (b) best static:  every layout the planner can make per GPU (maximal ones), every combination over the GPUs,
                    scored by an event model of the same dispatch; the best by mean job completion time is then
                    run for real (its layout made before the trace starts, not counted)
  (c) whole GPUs:   no MIG, one job per GPU (108 SMs); run for real
  (d) drain and recreate: mig-parted's way, run for real. The GPUs start as all-1g.10gb (mig-parted's example
                    config). Every 5 s of trace time the layouts that would have served the last 20 s of arrivals
                    best (the same event model, one GPU at a time) are computed; where they beat the current ones by
                    20%, each GPU whose layout changes takes no new job, finishes its running ones, and is rebuilt
                    whole.
A job waits for the smallest free partition with enough memory in (b), (c) and (d), in arrival order.
Traces: "changing" (the mix moves from small to medium to large jobs) and "steady" (small jobs only); each phase has
a fixed number of jobs per GPU at seeded random times.
Goals: on the changing mix, mean JCT of dynamic ≥ 16% lower than (b) and ≥ 40% lower than (c); on the steady mix,
never more than 5% worse than (b). The last two columns are (a) and (a') ÷ each row (below 1: dynamic is faster).
    python benchmarks/dynamic.py [--gpus 1,4] [--mix changing,steady] [--repeat N] [--by-window] [--time-scale S]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import math
import os
import random
import shutil
import statistics
import tempfile
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import replaying
from layouts import maximal_layouts

import migpool as sky
from migpool.backend.simulated import HARDWARE_LATENCY
from migpool.mig import catalog
from migpool.mig.planner import plan
from migpool.pool.api.providers import DynamicMigOptions
from migpool.pool.dynamic.effects import Effects
from migpool.pool.dynamic.policy import DynamicPolicy
from migpool.pool.dynamic.view import Gpu, GpuState, PoolView

GPU = catalog.lookup("A100-80GB")
WHOLE_SMS = GPU.sms
NEED = {"small": "1g.10gb", "medium": "3g.40gb", "large": "7g.80gb"}
SECONDS_ON_NEED = {"small": 4.0, "medium": 8.0, "large": 10.0}  # run time on the class's own profile
SCALE = 10.0  # trace seconds per wall-clock second (--time-scale)
LEARN_SEED = 8  # the trace that (a') learned from; the timed traces use seed 7
WINDOW = 10.0  # --by-window: mean JCT of the jobs arriving in each window of this many trace seconds


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
    """Phases of (seconds, {class: jobs per second per GPU}); each phase gets round(rate × seconds × GPUs) jobs of
    a class at seeded uniform times."""
    rng = random.Random(seed)
    phases = (
        [
            (30.0, {"small": 1.0, "medium": 0.05}),
            (30.0, {"medium": 0.2, "small": 0.2}),
            (30.0, {"large": 0.06, "small": 0.2}),
        ]
        if kind == "changing"
        else [(90.0, {"small": 1.2})]
    )
    jobs, t0 = [], 0.0
    for length, rates in phases:
        for cls, rate in rates.items():
            jobs += [Job(round(t0 + rng.uniform(0, length), 3), cls) for _ in range(round(rate * length * gpus))]
        t0 += length
    return sorted(jobs, key=lambda j: j.arrival)


def usable_sms(partition_sms: int, cls: str) -> int:
    return min(partition_sms, 2 * GPU.profile(NEED[cls]).sms)


@sky.function
def run_job(work: float, whole_sms: int, cls: str, scale: float = 1.0) -> tuple[str, int]:
    info = sky.instance_info()
    if info.partition is None:
        sms, name = whole_sms, "whole"
    else:
        name = info.partition.profile
        sms = catalog.lookup("A100-80GB").profile(name).sms
    time.sleep(work / usable_sms(sms, cls) / scale)
    return name, sms


def now() -> float:
    """Trace time: wall time × SCALE."""
    return time.monotonic() * SCALE


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


def modeled_mean(combo: Sequence[tuple[str, ...]], jobs: list[Job]) -> float:
    jct = model([u for lay in combo for u in lay], jobs)
    return statistics.mean(jct) if jct else math.inf


def best_static(jobs: list[Job], gpus: int) -> tuple[tuple[tuple[str, ...], ...], float]:
    scored = ((combo, modeled_mean(combo, jobs)) for combo in itertools.combinations_with_replacement(LAYOUTS, gpus))
    return min(scored, key=lambda cs: cs[1])


# --- (d) drain and recreate ---
WINDOW_S, DECIDE_S, BETTER_BY = 20.0, 5.0, 0.20


class DrainRecreate(DynamicPolicy):
    """Rebuilds whole GPUs to the layouts that the last WINDOW_S of arrivals want, after draining them."""

    def __init__(self, gpus: Sequence[GpuState], view: PoolView, effects: Effects, keep_idle: float, *rest) -> None:
        self.arrivals: list[tuple[float, str]] = []
        self.current: dict[Gpu, tuple[str, ...]] = {}
        self.target: dict[int, tuple[str, ...]] = {}  # GPUs draining, and their next layout
        self.built = False
        self.decided = 0.0
        self.rebuilds = 0
        super().__init__(gpus, view, effects, keep_idle)

    def admit(self, task) -> None:
        super().admit(task)
        self.arrivals.append((now(), task.args[2]))

    def step(self) -> None:
        if not self.built:
            self.current = {g: ("1g.10gb",) * 7 for g in self.gpus}
            for g in self.gpus:
                self._build(g, self.current[g])
            self.built = True
        for g, lay in list(self.target.items()):
            mine = [s for s in self.slots if s.gpu == g]
            with self.view.lock:
                busy = any(s.worker.outstanding for s in mine)
            if not busy:
                self.destroy(mine, "drain and recreate")
                self._build(g, lay)
                self.current[g] = lay
                del self.target[g]
                self.rebuilds += 1
        t_now = now()
        if self.target or t_now - self.decided < DECIDE_S:
            return
        self.decided = t_now
        recent = [Job(t - t_now + WINDOW_S, cls) for t, cls in self.arrivals if t >= t_now - WINDOW_S]
        if not recent:
            return
        combo = [self.current[g] for g in self.gpus]
        now_cost = best_cost = modeled_mean(combo, recent)
        best = list(combo)
        for _ in range(2):  # one GPU at a time, twice over
            for k in range(len(best)):
                for lay in LAYOUTS:
                    cost = modeled_mean(best[:k] + [lay] + best[k + 1 :], recent)
                    if cost < best_cost:
                        best, best_cost = best[:k] + [lay] + best[k + 1 :], cost
        if best_cost < (1 - BETTER_BY) * now_cost:
            with self.view.lock:
                for g, lay in zip(self.gpus, best, strict=False):
                    if lay != self.current[g]:
                        self.target[g] = lay
                        self.effects.drain([s.worker for s in self.slots if s.gpu == g])

    def good_fit(self, job: object, worker: object, behind: int) -> bool:
        return True  # any partition that holds a job takes it: this way sizes nothing by the load

    def _build(self, g: Gpu, lay: tuple[str, ...]) -> None:
        """Make the GPU's whole layout before going on, each partition's worker started as soon as it exists."""
        for inst in plan(GPU, {n: lay.count(n) for n in set(lay)}):
            self.create(g, inst, "drain and recreate")
            for m in list(self.making):
                m.done.result()
            self.made()


class DrainRecreatePlugin(sky.plugins.mig):
    def __init__(self) -> None:
        super().__init__(dynamic=True, gpus="all")

    def dynamic_mig(self) -> DynamicMigOptions | None:
        own = super().dynamic_mig()
        return None if own is None else dataclasses.replace(own, keep_idle=0.0, policy=DrainRecreate)


# --- real runs ---
def replay(compute: sky.Compute, jobs: list[Job], make) -> list[tuple[float, float, str]]:
    """Submit each job, as the task `make(job)` builds, at its arrival time: (arrival, end, profile) of each."""
    ended = replaying.replay(compute, [j.arrival for j in jobs], lambda k: make(jobs[k]), SCALE)
    return [(j.arrival, end, result[0]) for j, (end, result) in zip(jobs, ended, strict=True)]


def needing(j: Job) -> sky.Task:
    """The job as a task that asks for its class's memory, not for a profile."""
    return dataclasses.replace(
        run_job(j.work, WHOLE_SMS, j.cls, SCALE), min_memory=f"{GPU.profile(j.need).memory_mib}MiB"
    )


class StaticDispatch:
    """The static pool's dispatcher: a job takes the smallest free partition with enough memory, else waits."""

    def __init__(self, compute: sky.Compute) -> None:
        self.free: dict[str, int] = {}
        for p in compute.partitions:
            self.free[p.profile] = self.free.get(p.profile, 0) + 1
        self.cv = threading.Condition()

    def run(self, compute: sky.Compute, jobs: list[Job]) -> list[tuple[float, float, str]]:
        results = [None] * len(jobs)
        start = now()
        waiting: list[tuple[int, Job]] = []
        futs = []

        def pick(j: Job) -> str | None:
            need = GPU.profile(j.need).memory_mib
            ok = [n for n, c in self.free.items() if c > 0 and GPU.profile(n).memory_mib >= need]
            return min(ok, key=lambda n: GPU.profile(n).memory_mib) if ok else None

        def launch(k: int, j: Job, name: str) -> None:
            self.free[name] -= 1
            fut = compute.submit(run_job(j.work, WHOLE_SMS, j.cls, SCALE).on(name))

            def done(f, k=k, j=j, name=name):
                with self.cv:
                    results[k] = (j.arrival, now() - start, name)
                    self.free[name] += 1
                    for item in list(waiting):
                        n = pick(item[1])
                        if n:
                            waiting.remove(item)
                            launch(item[0], item[1], n)

            futs.append(fut)
            fut.add_done_callback(done)

        for k, j in enumerate(jobs):
            delay = j.arrival - (now() - start)
            if delay > 0:
                time.sleep(delay / SCALE)
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
    busy = sum(
        j.work
        / usable_sms(WHOLE_SMS if name == "whole" else GPU.profile(name).sms, j.cls)
        * (GPU.compute_slices if name == "whole" else GPU.profile(name).slices)
        for j, (_, _, name) in zip(jobs, results, strict=False)
    )
    windows = [
        [end - arrival for arrival, end, _ in results if k * WINDOW <= arrival < (k + 1) * WINDOW]
        for k in range(math.ceil(max(a for a, _, _ in results) / WINDOW + 1e-9))
    ]
    return dict(
        mean=statistics.mean(jct),
        p95=jct[int(0.95 * (len(jct) - 1))],
        makespan=makespan,
        util=busy / (makespan * GPU.compute_slices * gpus),
        windows=[statistics.mean(w) if w else math.nan for w in windows],
    )


def main() -> None:
    global SCALE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", default="1,4")
    ap.add_argument("--mix", default="changing,steady")
    ap.add_argument("--time-scale", type=float, default=SCALE, help="trace seconds per wall-clock second")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run (a) and (a') this many times each: the run with the median mean JCT is shown, and the spread",
    )
    ap.add_argument(
        "--by-window",
        action="store_true",
        help=f"also print each strategy's mean JCT for the jobs arriving in each {WINDOW:g} s of the trace",
    )
    args = ap.parse_args()
    SCALE = args.time_scale
    os.environ["MIGPOOL_SIM_LATENCY"] = ",".join(f"{op}={t / SCALE}" for op, t in HARDWARE_LATENCY.items())
    latencies = ", ".join(f"{t * 1000:.0f} ms" for t in HARDWARE_LATENCY.values())
    print(
        textwrap.fill(
            f"Trace seconds run {SCALE:g}× faster: job sleeps and GPU-instance create/destroy latencies ({latencies}) "
            f"are divided by {SCALE:g}; worker start-up and the controllers' own work are not. Times below are trace "
            "seconds."
            if SCALE != 1
            else f"Real time: jobs sleep their trace seconds; create/destroy take {latencies}.",
            80,
        )
    )
    for gpus in map(int, args.gpus.split(",")):
        for kind in args.mix.split(","):
            jobs = trace(kind, gpus)
            spec = f"A100-80GB:{gpus}"
            rows = {}

            pool = functools.partial(replaying.simulated_pool, spec)

            def dynamic(remember, jobs=jobs, gpus=gpus, pool=pool) -> dict:
                """Run the trace on a dynamic pool `repeat` times; the run with the median mean JCT, with the
                spread of the runs' mean JCTs and its number of changes."""
                runs = []
                for _ in range(args.repeat):
                    if remember:  # every run starts from what the learning run kept, not from the run before
                        mine = os.path.join(tempfile.mkdtemp(), "run-times.json")
                        shutil.copyfile(remember, mine)
                    with pool(sky.plugins.mig(dynamic=True, gpus="all", remember=mine if remember else False)) as c:
                        runs.append(dict(summary(replay(c, jobs, needing), gpus, jobs), changes=len(c.changes)))
                runs.sort(key=lambda run: run["mean"])
                return dict(runs[len(runs) // 2], spread=(runs[0]["mean"], runs[-1]["mean"]))

            rows["(a) dynamic"] = dynamic(None)
            learned = os.path.join(tempfile.mkdtemp(), "run-times.json")  # run times learned here only
            with pool(sky.plugins.mig(dynamic=True, gpus="all", remember=learned)) as c:  # on another draw
                replay(c, trace(kind, gpus, seed=LEARN_SEED), needing)
            rows["(a') learned"] = dynamic(learned)
            changes, changes_learned = rows["(a) dynamic"]["changes"], rows["(a') learned"]["changes"]
            combo, modeled = best_static(jobs, gpus)
            with pool(StaticLayout([{n: lay.count(n) for n in set(lay)} for lay in combo])) as c:
                rows["(b) best static"] = summary(StaticDispatch(c).run(c, jobs), gpus, jobs)
            with pool(sky.plugins.gpus("all"), concurrency=gpus) as c:
                rows["(c) whole GPUs"] = summary(
                    replay(c, jobs, lambda j: run_job(j.work, WHOLE_SMS, j.cls, SCALE)), gpus, jobs
                )
            with pool(DrainRecreatePlugin()) as c:
                rows["(d) drain+recreate"] = summary(replay(c, jobs, needing), gpus, jobs)
                rebuilds = c.controller.policy.rebuilds
            print(
                "\n"
                + textwrap.fill(
                    f"{gpus} × A100-80GB, {kind} mix, {len(jobs)} jobs; dynamic made {changes} change(s) "
                    f"({changes_learned} with learned run times); drain and recreate rebuilt {rebuilds} GPU(s); best "
                    f"static: {' | '.join('+'.join(lay) for lay in combo)} (modeled mean JCT {modeled:.2f} s)",
                    80,
                )
            )
            head = ("strategy", "mean JCT", "p95 JCT", "makespan", "util", "(a) ×", "(a') ×")
            print("  {:<18} {:>9} {:>8} {:>9} {:>5}  {:<6} {:<6}".format(*head))
            for name, r in rows.items():
                a, learned = (rows[k]["mean"] / r["mean"] for k in ("(a) dynamic", "(a') learned"))
                print(
                    f"  {name:<18} {r['mean']:>8.2f}s {r['p95']:>7.2f}s {r['makespan']:>8.2f}s {r['util']:>5.0%}"
                    f"  ×{a:<5.2f} ×{learned:.2f}"
                )
            if args.repeat > 1:
                print(f"  mean JCT over {args.repeat} runs, the median run shown above:")
                for name in ("(a) dynamic", "(a') learned"):
                    low, high = rows[name]["spread"]
                    print(f"  {name:<18} {low:>8.2f}s – {high:.2f}s")
            if args.by_window:
                print(f"  mean JCT of the jobs arriving in each {WINDOW:g} s, from the start:")
                for name, r in rows.items():
                    print(f"  {name:<18} " + " ".join(f"{x:5.1f}" for x in r["windows"]))


class StaticLayout(sky.plugins.Plugin):
    """A fixed per-GPU layout (GPU i gets layouts[i]), one worker per partition."""

    def __init__(self, layouts: list[dict[str, int]]) -> None:
        self.inner = sky.plugins.mig(layout=layouts[0], gpus="all")
        self.layouts = layouts

    def validate(self, node):
        pass

    def workers(self, node):
        return len(node.partitions) or None

    def bootstrap(self, node):
        from migpool.mig.layout import GpuLayout, Layout, MachineLayout
        from migpool.pool.api.info import Partition
        from migpool.reconcile.core import apply

        desired = MachineLayout(tuple(GpuLayout(Layout.of(lay), (i,)) for i, lay in enumerate(self.layouts)))
        apply(desired, node.backend)
        node.partitions = [
            Partition(
                uuid=d.uuid,
                profile=d.profile_name,
                gpu_index=g.index,
                gpu_uuid=g.uuid,
                memory_mib=d.memory_mib,
                gi_id=d.gi_id,
                ci_id=d.ci_id,
            )
            for g in node.backend.gpus()
            for d in node.backend.mig_devices(g.index)
        ]

    def around_process(self, worker):
        return self.inner.around_process(worker)


LAYOUTS = maximal_layouts(GPU)

if __name__ == "__main__":
    main()
