"""Dynamic MIG on MISO's measured workload (SoCC'22; benchmarks/data/miso.json, converted by miso_convert.py).

MISO's 100 training jobs (19 model and batch-size configurations), each with its run time on a whole A100-40GB
and its per-iteration latency measured on every MIG slice; arrivals as MISO's own runs draw them (seed 1): "readme"
(30 jobs sampled from the trace, one every 100 s on average: MISO's README check) and "default" (all 100, one
every 60 s, the first third twice as often: MISO's defaults). Simulated A100-40GBs; every job needs the memory of
the smallest slice MISO could run it on.

THE TIME MODEL IS MISO'S MEASUREMENTS: a job does its iterations, sleeping its measured per-iteration latency on
the partition it runs on. The 1g.10gb profile, which MISO did not measure, has 1g.5gb's 14 SMs: a job runs there
at its 1g.5gb speed, or, where it did not fit 5 GB, at half its 2g.10gb speed. A whole GPU runs a job at 7g.40gb's
speed (MISO's trace times are 7g.40gb times).

  (a) dynamic:        migpool's own controller (DynamicPolicy, remember=False) driven in virtual time by
                      migpool.advise.virtual: no process sleeps, so a full trace takes a minute, not hours. Each
                      job is a
                      checkpoint task (@function(checkpoint=True), one function per model configuration) that
                      yields a checkpoint every 1% of its iterations and costs 30 s to resume after a move
                      (MISO's default migration overhead); the controller knows nothing at first. A new
                      partition's worker is ready WARM_START_S after it where the pool's warm spare is parked,
                      else FRESH_START_S (both measured on an H100 with torch; the spare is replaced in
                      FRESH_START_S), and the partition takes the simulated create latency. --real also
                      runs it in a real simulated pool (worker processes, scaled time) as "(ar) real run".
  (a') learned:       the same, starting from what a pool learned on the other run (readme <-> default).
  (a-) plain:         (a) with plain tasks (no checkpoints), from nothing: each size is final, chosen by the
                      load and when running tasks are expected to end; no task moves. (a-') the same from
                      what a plain run of the other trace learned. (am) half plain: every other job plain.
  (b) best static:    in hindsight: the combination of per-GPU layouts (maximal ones, over every placement:
                      migpool.advise.model) with the lowest mean JCT in the event model (migpool.advise.model);
                      exhaustive up to 4 GPUs, beyond that
                      the best 20 for one GPU fewer, each with every layout added, improved one GPU at a time
                      (--check-search compares that with exhaustive at 2-4 GPUs).
  (c) whole GPUs:     no MIG, FIFO.
  (d) MISO's static:  3g.20gb+2g.10gb+2g.10gb on every GPU, a job on the largest idle slice that holds it (MISO's
                      exp_static.py).
  (e) drain+recreate: every 10 minutes, the layouts that would have served the last 30 minutes of arrivals best
                      (the event model, one GPU at a time); a GPU whose layout improves it by 20% takes no new job,
                      finishes its running ones and is rebuilt, taking jobs again REBUILD_S later (destroy,
                      create, workers started fresh).
  (f) joint replan:   MISO's way, idealised, not a controller: at every arrival and end, each GPU's layout and its
                      running jobs' profiles chosen to minimise the sum of every known job's expected completion,
                      knowing each job's work left; 30 s per moved job, placements and partition changes free
                      (joint_replan()).
(b)-(f) are scored by the event model: a waiting job, in arrival order, takes the free partition that holds it and
runs it fastest; a job that fits no free partition does not hold back later ones.
Goals: dynamic's mean JCT at most (b)'s and (c)'s on every trace and GPU count; -16% against (b) where
partitioning pays (MISO's figure against its static). The last columns are the dynamic rows ÷ each row.
--order-check asks whether the order of service is what keeps (a) from the goals: (a) and (b) with the waiting
jobs in arrival order, and both served least work first (each job's true work, known to no scheduler).
    python benchmarks/miso.py [--trace readme,default] [--gpus 1,2,4] [--time-scale 100] [--quick]
    python benchmarks/miso.py --order-check [--trace ...] [--gpus ...] > docs/generated/order-check.txt
--seeds asks whether one draw's figures hold on others: (a), (a-), (am), (b), (c) and (f) on each run drawn with
other seeds (benchmarks/data/miso.json holds seeds 1-8; 1 is MISO's), cases side by side on every core.
    python benchmarks/miso.py --seeds 1-8 [--trace ...] [--gpus ...] > docs/generated/seeds-check.txt
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import heapq
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replaying import replay, simulated_pool

import migpool as sky
from migpool.advise import model
from migpool.advise.virtual import VirtualPool, VJob
from migpool.backend.simulated import HARDWARE_LATENCY
from migpool.mig import catalog
from migpool.pool.dynamic.sizing import RunTimes

DATA = json.loads((Path(__file__).parent / "data" / "miso.json").read_text())
GPU = catalog.lookup("A100-40GB")
PROFILES = {p.name: p for p in GPU.profiles if p.plain}
SLICES = {name: p.slices for name, p in PROFILES.items()}  # what dispatch's pick="largest" ranks by
MOVE_S = 30.0  # MISO's default migration overhead (run.py --overhead)
# a new partition's worker, ready for its first CUDA kernel, on the lent H100 (docs/hardware/startup.txt, the
# modelled 92 ms create taken off): from a warm spare with torch imported, and from a fresh process
WARM_START_S, FRESH_START_S = 0.40, 3.78
REBUILD_S = sum(HARDWARE_LATENCY.values()) + FRESH_START_S  # a drained GPU rebuilt: destroy, create, start
CHUNKS = 100  # checkpoints per job
SCALE = 100.0  # trace seconds per wall-clock second (--time-scale)
OTHER = {"readme": "default", "default": "readme"}


@dataclass(frozen=True)
class Job:
    id: int
    model: str
    arrival: float
    seconds: dict[str, float]  # on each profile that holds it (1g.10gb by the rule above; "whole": 7g.40gb's)

    @property
    def need_mib(self) -> int:
        smallest = min((PROFILES[p] for p in self.seconds if p in PROFILES), key=lambda p: p.memory_mib)
        return smallest.memory_mib


def jobs(name: str, limit: int | None = None, seed: int = 1) -> list[Job]:
    """The run `name` as arrivals drawn with `seed` (1: MISO's own; 2-8: the same run drawn again)."""
    by_id = {j["id"]: j for j in DATA["jobs"]}
    drawn = DATA["arrivals"][name]["seeds"]
    if str(seed) not in drawn:
        raise SystemExit(f"error: no seed {seed} in benchmarks/data/miso.json: it has seeds {', '.join(drawn)}")
    out = []
    for jid, arrival in drawn[str(seed)][:limit]:
        measured = dict(by_id[jid]["seconds"])
        if "1g.5gb" in measured:
            measured["1g.10gb"] = measured["1g.5gb"]
        elif "2g.10gb" in measured:
            measured["1g.10gb"] = 2 * measured["2g.10gb"]
        measured["whole"] = measured["7g.40gb"]
        out.append(Job(jid, by_id[jid]["model"], float(arrival), measured))
    return out


def per_slice(seconds: dict[str, float]) -> float:
    """Slice-seconds on the profile that does the most per slice, of `seconds` by profile (the --order-check key)."""
    return min(PROFILES[p].slices * s for p, s in seconds.items() if p in PROFILES)


def work(job: Job) -> float:
    """The slice-seconds `job` needs on the profile that does the most of it per slice."""
    return per_slice(job.seconds)


# --- the event model: migpool.advise.model ---
_ORDERS: dict[str, Callable[[Any], float] | None] = {"arrival": None, "shortest": work}  # dispatch's orders


def dispatch(units: Sequence[str], trace: Sequence[Job], pick: str = "fastest", order: str = "arrival") -> list[float]:
    """JCTs on a static set of partitions (model.dispatch): a waiting job, in arrival order (`shortest`: least
    work() first), takes a free partition that holds it (`fastest`: the one that runs it fastest; `largest`: the
    largest, MISO's static); later jobs may go first."""
    return model.dispatch(units, trace, pick, SLICES, order=_ORDERS[order])


def score(combo: Sequence[tuple[str, ...]], trace: Sequence[Job]) -> float:
    """The mean JCT of `combo`'s partitions in the event model."""
    return model.mean(dispatch(model.units_of(combo), trace))


def best_static(
    trace: Sequence[Job], gpus: int, exhaustive_up_to: int = 4, order: str = "arrival"
) -> tuple[tuple[tuple[str, ...], ...], float]:
    """The best combination of per-GPU layouts for `trace` (jobs served in `order`, as dispatch()) and its mean
    JCT: model.best_static over LAYOUTS, keeping the best 20 of one GPU fewer beyond `exhaustive_up_to`."""
    return model.best_static(trace, gpus, LAYOUTS, exhaustive_up_to, keep=20, order=_ORDERS[order])


def drain_recreate(trace: Sequence[Job], gpus: int, decide_s: float = 600.0, window_s: float = 1800.0) -> list[float]:
    """(e) in the event model: start as MISO's static; every `decide_s`, the layouts that would have served the
    last `window_s` of arrivals best (one GPU at a time, twice over); a GPU whose layout changes drains, then is
    rebuilt: usable REBUILD_S later (its partitions destroyed and made, their workers started fresh)."""
    current = [("2g.10gb", "2g.10gb", "3g.20gb")] * gpus
    target: dict[int, tuple[str, ...]] = {}
    parts: list[list[list[int | None]]] = [[[None] for _ in lay] for lay in current]  # job on each partition
    events = [(j.arrival, 0, k, None) for k, j in enumerate(trace)]
    heapq.heapify(events)
    waiting: list[int] = []
    jct = [math.nan] * len(trace)
    usable_at = [0.0] * gpus  # a rebuilt GPU takes jobs from then on
    next_decision = decide_s
    while events:
        t, kind, k, where = heapq.heappop(events)
        while t >= next_decision:  # decisions due before this event
            recent = [dataclasses.replace(j, arrival=j.arrival - next_decision + window_s) for j in trace]
            recent = [j for j in recent if 0 <= j.arrival <= window_s]
            if recent:
                best, best_cost = list(current), score(current, recent)
                now_cost = best_cost
                for _ in range(2):
                    for g in range(gpus):
                        for lay in LAYOUTS:
                            cand = [*best[:g], lay, *best[g + 1 :]]
                            c = score(cand, recent)
                            if c < best_cost:
                                best, best_cost = cand, c
                if best_cost < 0.8 * now_cost:
                    target = {g: lay for g, lay in enumerate(best) if lay != current[g]}
            next_decision += decide_s
        if kind == 0:
            waiting.append(k)
        elif kind == 1:
            g, i = where
            parts[g][i][0] = None
            jct[k] = t - trace[k].arrival
        for g, lay in list(target.items()):
            if all(p[0] is None for p in parts[g]):
                current[g] = lay
                parts[g] = [[None] for _ in lay]
                del target[g]
                usable_at[g] = t + REBUILD_S
                heapq.heappush(events, (usable_at[g], 2, -1, None))  # (wakes the waiting jobs then)
        for k2 in list(waiting):
            job = trace[k2]
            free = [
                (g, i)
                for g in range(gpus)
                if g not in target and usable_at[g] <= t
                for i, u in enumerate(current[g])
                if parts[g][i][0] is None and u in job.seconds
            ]
            if not free:
                continue
            g, i = min(free, key=lambda gi: job.seconds[current[gi[0]][gi[1]]])
            parts[g][i][0] = k2
            waiting.remove(k2)
            heapq.heappush(events, (t + job.seconds[current[g][i]], 1, k2, (g, i)))
    return jct


def _slowdown(job: Job, profile: str) -> float:
    return job.seconds[profile] / job.seconds["7g.40gb"]


def _assign(layout: tuple[str, ...], jobs: list[Job], cost: dict[tuple[int, str], float]) -> tuple[float, tuple]:
    """The cheapest way to give each job its own partition of `layout` (`cost[i, profile]`: jobs[i]'s there):
    (cost, ((i, profile), ...)); the tuple is empty where the jobs do not fit (and the cost infinite)."""
    kinds = sorted(set(layout))

    @functools.cache
    def best(i: int, left: tuple[int, ...]) -> tuple[float, tuple]:
        if i == len(jobs):
            return 0.0, ()
        found: tuple[float, tuple] = (math.inf, ())
        for k, name in enumerate(kinds):
            if left[k] and name in jobs[i].seconds:
                rest = best(i + 1, (*left[:k], left[k] - 1, *left[k + 1 :]))
                c = cost[i, name] + rest[0]
                if c < found[0]:
                    found = (c, ((i, name), *rest[1]))
        return found

    return best(0, tuple(layout.count(n) for n in kinds))


def _queue_ends(parts: list[tuple[str, float]], queue: Sequence[tuple[Job, float]], now: float) -> float:
    """The sum of the completion times of the waiting jobs (each with its work, in 7g.40gb seconds), in arrival
    order, each on the fastest partition that holds it as partitions free (a job that fits no partition does not
    hold back later ones), no more arrivals."""
    frees = [(at, i) for i, (_, at) in enumerate(parts)]
    heapq.heapify(frees)
    idle: list[int] = []
    waiting = list(queue)
    total = 0.0
    while waiting and frees:
        at = frees[0][0]
        while frees and frees[0][0] <= at:
            idle.append(heapq.heappop(frees)[1])
        for job, work in list(waiting):
            fit = [i for i in idle if parts[i][0] in job.seconds]
            if fit:
                i = min(fit, key=lambda i: _slowdown(job, parts[i][0]))
                idle.remove(i)
                waiting.remove((job, work))
                end = max(at, now) + work * _slowdown(job, parts[i][0])
                total += end
                heapq.heappush(frees, (end, i))
    return total + 1e12 * len(waiting)


def joint_replan(trace: Sequence[Job], gpus: int) -> list[float]:
    """(f) in the event model: MISO's way, with perfect knowledge. At each arrival and each end, every GPU in turn
    takes the maximal layout, and the assignment of its running jobs to it, that minimise the sum of the expected
    completion times of all known jobs (the running ones; the waiting ones as they would take partitions in
    arrival order; no more arrivals). A running job whose profile changes stops for MOVE_S. It knows each job's
    remaining work, changes a GPU's layout around its running jobs whatever their placements, and pays nothing for
    creating or destroying partitions: what re-planning whole GPUs at each event gives, not a controller."""
    layout: list[tuple[str, ...]] = [("7g.40gb",)] * gpus
    on: list[dict[int, int]] = [{} for _ in range(gpus)]  # job index -> partition index, per GPU
    left: dict[int, float] = {}  # work left (7g.40gb seconds), by job index
    goes_on: dict[int, float] = {}  # when a job runs again (after a move), by job index
    queue: list[int] = []
    jct = [math.nan] * len(trace)
    now = 0.0

    def parts(g: int, lay: tuple[str, ...], where: dict[int, int]) -> list[tuple[str, float]]:
        out = [(name, now) for name in lay]
        for k, i in where.items():
            moved = k in on[g] and layout[g][on[g][k]] != lay[i]
            start = now + MOVE_S if moved else max(now, goes_on[k])
            out[i] = (lay[i], start + left[k] * _slowdown(trace[k], lay[i]))
        return out

    def total(all_parts: list[tuple[str, float]]) -> float:
        running = sum(at for _, at in all_parts if at > now)
        return running + _queue_ends(all_parts, [(trace[k], left[k]) for k in queue], now)

    def decide() -> None:
        for _ in range(3):
            changed = False
            for g in range(gpus):
                others = [p for h in range(gpus) if h != g for p in parts(h, layout[h], on[h])]
                mine = list(on[g])
                cost = {
                    (i, n): left[k] * _slowdown(trace[k], n) + (MOVE_S if layout[g][on[g][k]] != n else 0.0)
                    for i, k in enumerate(mine)
                    for n in trace[k].seconds
                    if n in PROFILES
                }
                best = (total(others + parts(g, layout[g], on[g])), layout[g], on[g])
                for lay in LAYOUTS:
                    if len(lay) < len(mine):
                        continue
                    _, got = _assign(lay, [trace[k] for k in mine], cost)
                    if mine and not got:
                        continue
                    where: dict[int, int] = {}
                    for i, name in got:
                        where[mine[i]] = next(x for x, n in enumerate(lay) if n == name and x not in where.values())
                    c = total(others + parts(g, lay, where))
                    if c < best[0] - 1e-6:
                        best = (c, lay, where)
                if best[1] != layout[g] or best[2] != on[g]:
                    for k, i in best[2].items():
                        if layout[g][on[g][k]] != best[1][i]:
                            goes_on[k] = now + MOVE_S
                    layout[g], on[g], changed = best[1], dict(best[2]), True
            if not changed:
                break
        for k in list(queue):  # the waiting jobs take free partitions, in arrival order
            job = trace[k]
            free = [
                (_slowdown(job, n), g, i)
                for g in range(gpus)
                for i, n in enumerate(layout[g])
                if i not in on[g].values() and n in job.seconds
            ]
            if free:
                _, g, i = min(free)
                queue.remove(k)
                on[g][k] = i
                goes_on[k] = now

    arrivals = sorted(range(len(trace)), key=lambda k: trace[k].arrival)
    while arrivals or queue or any(on):
        speed = {k: 1 / _slowdown(trace[k], layout[g][i]) for g in range(gpus) for k, i in on[g].items()}
        end = min(((max(now, goes_on[k]) + left[k] / v, k) for k, v in speed.items()), default=(math.inf, -1))
        nxt = trace[arrivals[0]].arrival if arrivals else math.inf
        t = min(end[0], nxt)
        for k, v in speed.items():
            left[k] -= max(0.0, t - max(now, goes_on[k])) * v
        now = t
        if end[0] <= nxt:
            k = end[1]
            for g in range(gpus):
                on[g].pop(k, None)
            jct[k] = now - trace[k].arrival
        else:
            k = arrivals.pop(0)
            left[k] = trace[k].seconds["7g.40gb"]
            queue.append(k)
        decide()
    return jct


# --- real runs ---
_FUNCTIONS: dict[tuple[str, bool], sky.RemoteFunction] = {}


def job_function(model: str, checkpoints: bool) -> sky.RemoteFunction:
    """One function per model configuration (dynamic MIG learns per function): a checkpoint task, or plain."""
    if (model, checkpoints) in _FUNCTIONS:
        return _FUNCTIONS[(model, checkpoints)]

    def run(per_iteration: dict, iterations: int, scale: float, resume=None):
        info = sky.instance_info()
        profile = info.partition.profile if info.partition else "whole"
        done = 0
        if resume is not None:
            done = resume
            time.sleep(MOVE_S / scale)  # restoring the checkpoint
        step = max(1, iterations // CHUNKS)
        while done < iterations:
            n = min(step, iterations - done)
            time.sleep(per_iteration[profile] * n / scale)
            done += n
            if checkpoints:
                yield sky.Checkpoint(done, done=done, total=iterations)
        return profile

    def plain(per_iteration: dict, iterations: int, scale: float):
        gen = run(per_iteration, iterations, scale)
        while True:
            try:
                next(gen)
            except StopIteration as end:
                return end.value

    fn = run if checkpoints else plain
    fn.__qualname__ = fn.__name__ = f"miso_{model}"
    made = sky.function(checkpoint=checkpoints)(fn)
    _FUNCTIONS[(model, checkpoints)] = made
    return made


def task(job: Job, checkpoints: bool) -> sky.Task:
    """The job as a task: its unit of work is one second of 7g.40gb time, so each size's seconds per unit are
    its model's slowdown there, the same for every job of the model whatever its length."""
    iterations = max(1, round(job.seconds["7g.40gb"]))
    per_iteration = {p: s / job.seconds["7g.40gb"] for p, s in job.seconds.items()}
    t = job_function(job.model, checkpoints)(per_iteration, iterations, SCALE)
    return dataclasses.replace(t, min_memory=f"{job.need_mib}MiB")


def mig(remember: Path | bool) -> sky.plugins.mig:
    """Dynamic MIG with its default keep_idle (30 s) in trace seconds."""
    return sky.plugins.mig(dynamic=True, gpus="all", remember=remember, keep_idle=30.0 / SCALE)


def dynamic(trace: Sequence[Job], gpus: int, remember: Path | None, checkpoints: bool = True) -> dict:
    mine: Path | bool = False
    if remember is not None:  # each run starts from the learned file, not from what the run before kept
        mine = Path(tempfile.mkdtemp()) / "run-times.json"
        shutil.copyfile(remember, mine)
    with simulated_pool(f"A100-40GB:{gpus}", mig(remember=mine)) as c:
        ended = replay(c, [j.arrival for j in trace], lambda k: task(trace[k], checkpoints), SCALE)
        jct = [end - j.arrival for (end, _), j in zip(ended, trace, strict=True)]
        changes = list(c.changes)
    return dict(
        mean=model.mean(jct),
        p95=sorted(jct)[int(0.95 * (len(jct) - 1))],
        moves=sum(1 for ch in changes if ch["action"] == "move"),
        changes=len(changes),
    )


_VFUNCS: dict[str, Any] = {}


def _vfn(model: str) -> Any:
    """A stand-in function per model configuration, named as the real runs name theirs (sizing learns per name)."""
    if model not in _VFUNCS:

        def fn() -> None: ...

        fn.__qualname__ = fn.__name__ = f"miso_{model}"
        _VFUNCS[model] = fn
    return _VFUNCS[model]


def _work_left(v: VJob) -> float:
    """What a virtual job has left, in work() terms: known to no scheduler (--order-check)."""
    return (v.units - v.done) * per_slice(v.unit_s)


def virtual(
    trace: Sequence[Job],
    gpus: int,
    sizes: RunTimes | None,
    checkpoints: bool | str = True,
    order: str = "arrival",
) -> tuple[dict, RunTimes]:
    """The dynamic strategy with migpool's own policy in virtual time (virtual_pool.py): real time, no scaling.
    `shortest`: the waiting jobs served least work left first (--order-check). `checkpoints="mixed"`: every other
    job a checkpoint task, the rest plain (each kind its own function, as in a real pool)."""
    sim = VirtualPool(
        [((0, g), GPU) for g in range(gpus)],
        keep_idle=30.0,
        sizes=sizes,
        start_s=WARM_START_S,
        fresh_s=FRESH_START_S,
        resume_s=MOVE_S,
        order=_work_left if order == "shortest" else None,
    )
    fids = {m: k for k, m in enumerate(sorted({j["model"] for j in DATA["jobs"]}))}
    for k, j in enumerate(trace):
        moves = k % 2 == 0 if checkpoints == "mixed" else bool(checkpoints)
        plain = checkpoints == "mixed" and not moves
        t = types.SimpleNamespace(
            fn=_vfn(j.model + ("_plain" if plain else "")),
            partition=None,
            need_mib=float(j.need_mib),
            min_memory=f"{j.need_mib}MiB",
            checkpoint=moves,
            node=None,
        )
        unit = {p: s / j.seconds["7g.40gb"] for p, s in j.seconds.items() if p != "whole"}
        sim.submit(
            VJob(k, t, fids[j.model] + (len(fids) if plain else 0), unit, round(j.seconds["7g.40gb"]), j.arrival)
        )
    done = sim.replay()
    jct = [v.end - v.arrival for v in done]
    creates = sum(1 for c in sim.policy.changes if c["action"] == "create")
    blocked = sim.policy.placement_blocked  # fragmentation refusals (compute.stats()'s placement_blocked): 0
    return dict(modeled(jct), moves=sum(v.moves for v in done), creates=creates, blocked=blocked), sim.policy.sizes


def modeled(jct: Sequence[float]) -> dict:
    return dict(mean=model.mean(jct), p95=model.p95(jct))


LAYOUTS = model.maximal_layouts(GPU)
MISO_STATIC = ("2g.10gb", "2g.10gb", "3g.20gb")


def order_check(names: Sequence[str], counts: Sequence[int], out: Path | None) -> None:
    """How much of the goals is the order the jobs are served in: (a) and (b) with the waiting jobs in arrival
    order, as the goals score them, and served least work first (work(): each job's true work, which no
    scheduler knows before the job ends)."""
    print(textwrap.fill(__doc__.splitlines()[0], 80))
    print(
        textwrap.fill(
            "Least work first: each job's true work (slice-seconds on its most efficient profile), which no "
            "scheduler knows before the job ends. Times are trace seconds, in virtual time.",
            80,
        )
    )
    found = []
    for name in names:
        trace = jobs(name)
        for gpus in counts:
            row: dict[str, float] = {}
            for order in ("arrival", "shortest"):
                row[f"(a) {order}"] = virtual(trace, gpus, None, order=order)[0]["mean"]
                row[f"(b) {order}"] = best_static(trace, gpus, order=order)[1]
            print(f"\n{gpus} x A100-40GB, MISO {name} ({len(trace)} jobs), mean JCT:")
            print(f"  {'served':<20} {'(a) dynamic':>12} {'(b) best static':>16} {'(a) / (b)':>10}")
            for order, label in (("arrival", "in arrival order"), ("shortest", "least work first")):
                a, b = row[f"(a) {order}"], row[f"(b) {order}"]
                print(f"  {label:<20} {a:>11.0f}s {b:>15.0f}s {a / b:>10.2f}")
            found.append(dict(trace=name, gpus=gpus, mean=row))
    if out is not None:
        out.write_text(json.dumps(dict(command=" ".join(["benchmarks/miso.py", *sys.argv[1:]]), runs=found), indent=1))


def _seed_case(name: str, gpus: int, seed: int) -> dict[str, float]:
    trace = jobs(name, seed=seed)
    runs = {"(a)": virtual(trace, gpus, None)[0], "(a-)": virtual(trace, gpus, None, checkpoints=False)[0]}
    runs["(am)"] = virtual(trace, gpus, None, checkpoints="mixed")[0]
    return {
        **{k: r["mean"] for k, r in runs.items()},
        "blocked": sum(r["blocked"] for r in runs.values()),
        "(b)": best_static(trace, gpus)[1],
        "(c)": model.mean(dispatch(["whole"] * gpus, trace)),
        "(f)": model.mean(joint_replan(trace, gpus)),
    }


def seeds_check(names: Sequence[str], counts: Sequence[int], seeds: Sequence[int], out: Path | None) -> None:
    """(a), (b), (c) and (f) on each run drawn with each of `seeds` (1: MISO's own): whether one draw's figures
    hold on others. Cases run side by side, one process per core."""
    print(textwrap.fill(__doc__.splitlines()[0], 80))
    print(
        textwrap.fill(
            "Each run's arrivals drawn again with other seeds, as MISO's exp_full.py draws them (seed 1 is "
            "MISO's own; readme also samples other jobs). Mean JCT in trace seconds, in virtual time; the "
            "ratios' geometric mean and worst per trace and GPU count.",
            80,
        )
    )
    cases = [(n, g, k) for n in names for g in counts for k in seeds]
    found: dict[tuple[str, int, int], dict[str, float]] = {}
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        running = {pool.submit(_seed_case, *c): c for c in cases}
        for k, done in enumerate(concurrent.futures.as_completed(running), 1):
            found[running[done]] = done.result()
            print(f"  ({k}/{len(cases)} done)", file=sys.stderr, flush=True)
    ratios = (("(a)", "(b)"), ("(a)", "(c)"), ("(f)", "(b)"), ("(a-)", "(bc)"), ("(am)", "(bc)"))
    for row in found.values():
        row["(bc)"] = min(row["(b)"], row["(c)"])  # the better of best static and whole GPUs
    every: dict[str, list[float]] = {f"{x}/{y}": [] for x, y in ratios}
    for name in names:
        for gpus in counts:
            print(f"\nMISO {name}, {gpus} x A100-40GB, mean JCT:")
            cols = ("(a)", "(a-)", "(am)", "(b)", "(c)", "(f)")
            head = "".join(f" {k:>7}" for k in cols)
            print(f"  {'seed':>4}{head}" + "".join(f" {x}/{y}" for x, y in ratios))
            got: dict[str, list[float]] = {f"{x}/{y}": [] for x, y in ratios}
            for seed in seeds:
                row = found[(name, gpus, seed)]
                for x, y in ratios:
                    got[f"{x}/{y}"].append(row[x] / row[y])
                print(
                    f"  {seed:>4}"
                    + "".join(f" {row[k]:>6.0f}s" for k in cols)
                    + "".join(f" {row[x] / row[y]:>7.2f}" for x, y in ratios)
                )
            for label, pick in (("geo. mean", _geomean), ("worst", max)):
                print(f"  {label:<52}" + "".join(f" {pick(got[k]):>7.2f}" for k in got))
            for k, v in got.items():
                every[k] += v
    a_b = every["(a)/(b)"]
    print(
        "\n"
        + textwrap.fill(
            f"All {len(a_b)}: (a) at most (b) on {sum(r <= 1 for r in a_b)}, geometric mean "
            f"{_geomean(a_b):.3f}, worst {max(a_b):.2f}; (a) at most (c) on "
            f"{sum(r <= 1 for r in every['(a)/(c)'])}; (f), MISO's re-planning with perfect knowledge, "
            f"against (b): geometric mean {_geomean(every['(f)/(b)']):.3f}, best {min(every['(f)/(b)']):.2f}. "
            f"Plain tasks from nothing, (a-), against the better of (b) and (c): geometric mean "
            f"{_geomean(every['(a-)/(bc)']):.3f}, worst {max(every['(a-)/(bc)']):.2f}; half of them plain, (am): "
            f"{_geomean(every['(am)/(bc)']):.3f}, worst {max(every['(am)/(bc)']):.2f}. Waits refused for "
            f"fragmentation (placement blocked): {sum(r['blocked'] for r in found.values()):.0f}.",
            80,
        )
    )
    if out is not None:
        rows = [dict(trace=n, gpus=g, seed=k, mean=found[(n, g, k)]) for n, g, k in cases]
        out.write_text(json.dumps(dict(command=" ".join(["benchmarks/miso.py", *sys.argv[1:]]), runs=rows), indent=1))


def _geomean(values: Sequence[float]) -> float:
    return math.exp(statistics.mean(math.log(v) for v in values))


def _seed_list(text: str) -> list[int]:
    """'1-8' or '1,3,5'."""
    first, _, last = text.partition("-")
    try:
        return list(range(int(first), int(last) + 1)) if last else [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range of seeds: give 1-8 or 1,3,5") from None


def main() -> None:
    global SCALE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="readme,default")
    ap.add_argument("--gpus", default="1,2,4")
    ap.add_argument("--time-scale", type=float, default=SCALE, help="trace seconds per wall-clock second")
    ap.add_argument("--quick", action="store_true", help="the CI form: 12 jobs of readme on 1 GPU, (a) and models")
    ap.add_argument("--real", action="store_true", help="run (a) in a real simulated pool too, in scaled time")
    ap.add_argument("--json", type=Path, help="also write every row to this file (docs/generated/miso.json)")
    ap.add_argument("--no-learned", action="store_true", help="leave out (a') and (a-') (each needs a learning run)")
    ap.add_argument("--check-search", action="store_true", help="compare (b)'s search with exhaustive at 2-4 GPUs")
    ap.add_argument(
        "--order-check", action="store_true", help="only (a) and (b), in arrival order and least work first"
    )
    ap.add_argument(
        "--seeds",
        type=_seed_list,
        help="only (a), (a-), (am), (b), (c) and (f), on the runs drawn with these seeds (1-8)",
    )
    args = ap.parse_args()
    names, counts = args.trace.split(","), [int(g) for g in args.gpus.split(",")]
    if args.seeds:
        seeds_check(names, counts, args.seeds, args.json)
        return
    if args.order_check:
        order_check(names, counts, args.json)
        return
    SCALE = 1000.0 if args.quick and args.time_scale == ap.get_default("time_scale") else args.time_scale
    os.environ["MIGPOOL_SIM_LATENCY"] = ",".join(f"{op}={t / SCALE}" for op, t in HARDWARE_LATENCY.items())
    print(
        textwrap.fill(
            f"Times are trace seconds. Virtual rows: a new partition's worker starts in {WARM_START_S:g} s from "
            f"a warm spare, else {FRESH_START_S:g} s (H100, torch). A real run (--real) runs trace seconds "
            f"{SCALE:g}x faster (job sleeps, the resume cost, GPU-instance create and destroy latencies); its "
            "worker start-up and the controller's own work do not.",
            80,
        )
    )
    if args.check_search:
        for name in args.trace.split(","):
            for n in (2, 3, 4):
                fast = best_static(jobs(name), n, exhaustive_up_to=n - 1)
                full = best_static(jobs(name), n)
                print(f"search check, {name}, {n} GPUs: grown {fast[1]:.0f} s, exhaustive {full[1]:.0f} s")
    runs = []
    for name in names:
        for gpus in counts if not args.quick else [1]:
            trace = jobs(name, 12 if args.quick else None)
            rows: dict[str, dict] = {}
            started = time.monotonic()
            combo, _ = best_static(trace, gpus)
            searched = time.monotonic() - started
            rows["(a) dynamic"], _ = virtual(trace, gpus, None)
            rows["(a-) plain"], _ = virtual(trace, gpus, None, checkpoints=False)
            rows["(am) half plain"], _ = virtual(trace, gpus, None, checkpoints="mixed")
            if args.real or args.quick:
                rows["(ar) real run"] = dynamic(trace, gpus, None)
            if not args.quick and not args.no_learned:
                other = jobs(OTHER[name])
                rows["(a') learned"], _ = virtual(trace, gpus, virtual(other, gpus, None)[1])
                learned = virtual(other, gpus, None, checkpoints=False)[1]
                rows["(a-') plain, lrn."], _ = virtual(trace, gpus, learned, checkpoints=False)
            rows["(b) best static"] = modeled(dispatch([u for lay in combo for u in lay], trace))
            rows["(c) whole GPUs"] = modeled(dispatch(["whole"] * gpus, trace))
            rows["(d) MISO static"] = modeled(dispatch(list(MISO_STATIC) * gpus, trace, pick="largest"))
            rows["(e) drain+recr."] = modeled(drain_recreate(trace, gpus))
            rows["(f) joint replan"] = modeled(joint_replan(trace, gpus))
            moved = ", ".join(f"{k.split()[0]} {r['moves']}" for k, r in rows.items() if "moves" in r)
            print(
                "\n"
                + textwrap.fill(
                    f"{gpus} x A100-40GB, MISO {name} ({len(trace)} jobs); best static: "
                    f"{' | '.join('+'.join(lay) for lay in combo)} (found in {searched:.1f} s); moves: {moved}",
                    80,
                )
            )
            dyn = [k for k in rows if k.startswith("(a")]
            head = ["strategy", "mean JCT", "p95 JCT", *(f"{k.split()[0]} x" for k in dyn)]
            print("  {:<17} {:>9} {:>9}".format(*head[:3]) + "".join(f" {h:>7}" for h in head[3:]))
            for k, r in rows.items():
                ratios = "".join(f" {rows[d]['mean'] / r['mean']:>7.2f}" for d in dyn)
                print(f"  {k:<17} {r['mean']:>8.0f}s {r['p95']:>8.0f}s{ratios}")
            keep = ("mean", "p95", "moves")
            runs.append(
                dict(
                    trace=name,
                    gpus=gpus,
                    best_static=["+".join(lay) for lay in combo],
                    rows={k: {f: r[f] for f in keep if f in r} for k, r in rows.items()},
                )
            )
    if args.json is not None:
        args.json.write_text(
            json.dumps(dict(command=" ".join(["benchmarks/miso.py", *sys.argv[1:]]), runs=runs), indent=1)
        )


if __name__ == "__main__":
    main()
