"""The site that owns a pool's partitions: where dynamic MIG reads GPUs, changes them and starts workers.
`LocalSite` is this machine; `ray_pool.RaySite` is the nodes of a Ray pool. The helpers below run on the GPU's
own node (directly here, or through the node's agent on Ray)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ...backend.base import Backend
from ...host.leases import LeaseKey
from ...host.proc import wait_gone
from ...mig.catalog import GpuModel
from ...mig.planner import PlannedInstance
from ...reconcile import core as reconcile
from ..api.info import Partition
from ..api.providers import Node
from ..scheduler.slot import Slot
from .view import Gpu, GpuState  # defined with the view the policy reads; named here too, for the Ray site

__all__ = ["Gpu", "GpuState", "LocalSite", "Site", "change_here", "gpus_here"]


def change_here(
    backend: Backend,
    gpu: int,
    node: int,
    create: list[PlannedInstance],
    destroy: list[PlannedInstance],
    pids: Sequence[int] = (),
    lease: LeaseKey | None = None,
    wait_s: float = 10.0,
) -> list[Partition]:
    """On the GPU's own node: destroy these instances and create those through `reconcile.change`, once the
    processes `pids` (the retired workers of the destroyed ones) have ended; returns the partitions created,
    leased under `lease` (the pool's plugin's) in this process."""
    wait_gone(pids, wait_s)
    want = {i.key for i in destroy}
    actual = [a for a in reconcile.actual_instances(backend, gpu) if a.instance.key in want] if destroy else []
    mine = lease.open(backend.state_dirs().leases()) if lease is not None else None
    devices = reconcile.change(backend, gpu, create=create, destroy=actual, leases=mine)
    return [Partition.of(d, node) for d in devices]


def gpus_here(backend: Backend, indices: Sequence[int]) -> list[tuple[int, GpuModel, list[PlannedInstance]]]:
    """On a node: each GPU's model and the partitions that were there before the pool (obstacles, never touched)."""
    return [
        (
            i,
            backend.model(i),
            [a.instance for a in reconcile.actual_instances(backend, i)] if backend.gpu(i).mig_current else [],
        )
        for i in indices
    ]


class Site(Protocol):
    """Where the controller's GPUs are: this machine (LocalSite) or the nodes of a Ray pool (ray_pool.RaySite)."""

    def gpus(self) -> list[GpuState]: ...

    def change(
        self, gpu: Gpu, create: list[PlannedInstance], destroy: list[PlannedInstance], pids: Sequence[int] = ()
    ) -> list[Partition]: ...

    def start_worker(self, part: Partition) -> Slot: ...


class LocalSite:
    """This machine's GPUs `indices`; `start_worker` is the pool's own way to start a worker on a partition;
    `lease`: whose leases the partitions made are."""

    def __init__(
        self,
        node: Node,
        indices: Sequence[int],
        start_worker: Callable[[Partition], Slot],
        lease: LeaseKey | None = None,
    ) -> None:
        self.node, self.indices = node, list(indices)
        self.start_worker = start_worker
        self.lease = lease

    def gpus(self) -> list[GpuState]:
        return [((0, i), m, f) for i, m, f in gpus_here(self.node.backend, self.indices)]

    def change(
        self, gpu: Gpu, create: list[PlannedInstance], destroy: list[PlannedInstance], pids: Sequence[int] = ()
    ) -> list[Partition]:
        return change_here(self.node.backend, gpu[1], 0, create, destroy, pids, self.lease)
