"""Dynamic MIG's expected figures for a workload: its own policy replayed in virtual time (virtual.py) on the
jobs of the event model. Slow: the policy steps every 5 virtual seconds and at every event, so a few hundred
jobs take minutes; `migpool advise --dynamic` asks for it."""

from __future__ import annotations

import math
import types
from collections.abc import Sequence

from ..mig.catalog import GpuModel
from .model import WHOLE, Job, Outcome, mean, p95
from .virtual import VirtualPool, VJob


def _stand_in(name: str) -> types.FunctionType:
    """A function per recorded name: the policy learns run times per function."""

    def fn() -> None: ...

    fn.__qualname__ = fn.__name__ = name or "task"
    return fn  # type: ignore[return-value]


def dynamic_outcome(jobs: Sequence[Job], gpu: GpuModel, gpus: int) -> Outcome:
    """What dynamic MIG (plain tasks: no checkpoints, so no moves; nothing learned before) is expected to give
    `jobs` on `gpus` GPUs of model `gpu`. A job's work is its whole-GPU run time, done at each profile's speed."""
    if not jobs:
        return Outcome(0.0, 0.0, 0.0)
    plain = {p.name: p for p in gpu.profiles if p.plain}
    if any(not any(n in plain for n in j.seconds) for j in jobs):
        return Outcome(math.inf, math.inf, math.inf)  # a job only a whole GPU holds: dynamic MIG never runs it
    sim = VirtualPool([((0, g), gpu) for g in range(gpus)], keep_idle=30.0)
    fids: dict[str, int] = {}
    fns: dict[str, types.FunctionType] = {}
    for k, j in enumerate(jobs):
        whole = j.seconds.get(WHOLE) or min(j.seconds.values())
        need = min(plain[n].memory_mib for n in j.seconds if n in plain)
        fid = fids.setdefault(j.name, len(fids))
        task = types.SimpleNamespace(
            fn=fns.setdefault(j.name, _stand_in(j.name)),
            partition=None,
            need_mib=float(need),
            min_memory=f"{need}MiB",
            checkpoint=False,
            node=None,
        )
        unit = {n: s / whole for n, s in j.seconds.items() if n in plain}
        sim.submit(VJob(k, task, fid, unit, whole, j.arrival))
    done = sim.replay()
    jct = [(v.end or math.inf) - v.arrival for v in done]
    first = min(j.arrival for j in jobs)
    return Outcome(mean(jct), p95(jct), max(v.end or math.inf for v in done) - first)
