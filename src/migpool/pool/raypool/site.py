"""Dynamic MIG across a Ray pool's nodes (dynamic.site.Site): GPUs are read and changed on their own node, through
migpool's agent there, and each new partition gets a worker actor pinned to that node."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from ...mig.planner import PlannedInstance
from ..api.info import Partition
from ..dynamic.site import Gpu, GpuState
from ..scheduler.core import Scheduler
from ..scheduler.slot import Slot
from .nodes import RayNode, agent, change_on, gpus_on, unwrap
from .pool import RayPool


class RaySite:
    """Dynamic MIG across a Ray pool's nodes: each node's GPUs are changed there, through its agent, and each new
    partition gets a worker actor pinned to that node. One controller (on the driver) sees every node's GPUs, so
    a task goes to an idle partition on any node, else to where one can be made with the least disturbance."""

    def __init__(self, pool: RayPool, sched: Scheduler) -> None:
        self.pool = pool
        self.sched = sched
        self._ids = itertools.count()

    def _call(self, r: RayNode, fn: Callable[..., Any], *args: Any) -> Any:
        import ray

        try:
            return ray.get(agent(r.node_id).call.remote(fn, self.pool.worker, r.index, len(self.pool.nodes), *args))
        except Exception as e:  # noqa: BLE001 - raised as the node's own error
            raise unwrap(e) from None

    def gpus(self) -> list[GpuState]:
        out: list[GpuState] = []
        for r in self.pool.nodes:
            options = next(o for p in r.plugins if (o := p.dynamic_mig()) is not None)
            for i, m, f in self._call(r, gpus_on, list(options.gpus)):
                out.append(((r.index, i), m, f))
        return out

    def change(
        self, gpu: Gpu, create: list[PlannedInstance], destroy: list[PlannedInstance], pids: Sequence[int] = ()
    ) -> list[Partition]:
        r = self.pool.nodes[gpu[0]]
        options = next(o for p in r.plugins if (o := p.dynamic_mig()) is not None)
        return self._call(r, change_on, gpu[1], create, destroy, list(pids), options.lease)

    def start_worker(self, part: Partition) -> Slot:
        sched = self.sched
        r = self.pool.nodes[part.node]
        i = next(self._ids)
        return sched.add_worker(self.pool.spec(r, i, len(sched.workers) + 1, i, len(sched.workers) + 1, part))
