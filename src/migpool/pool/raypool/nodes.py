"""A Ray pool's nodes: what the driver knows of each, how a task or actor is pinned to one, and what runs there
through migpool's agent on the node (the probe, the plugins' bootstrap and teardown, dynamic MIG's changes)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import MigpoolError
from ...host.leases import LeaseKey
from ...host.proc import wait_gone
from ...mig.catalog import GpuModel
from ...mig.planner import PlannedInstance
from ..api.image import Image
from ..api.info import Partition
from ..api.providers import Local, Node, PluginHooks, Worker
from ..dynamic.site import change_here, gpus_here
from ..worker import chain

# Ray would blank CUDA_VISIBLE_DEVICES for num_gpus=0 actors if this asked it to: pin it off for ours
RAY_OVERRIDE_ENV = "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"


@dataclass
class RayNode:
    """A node of the Ray cluster that the pool runs on, as the driver knows it."""

    index: int
    node_id: str
    ip: str
    hostname: str
    gpus: list[dict[str, Any]]
    cpus: float
    partitions: list[Partition] = field(default_factory=list)
    plugins: list[PluginHooks] = field(default_factory=list)  # the plugins as bootstrapped there (their state)
    missing: list[str] = field(default_factory=list)  # the Image's requirements this node's Python lacks

    def describe(self) -> str:
        return f"node {self.index} ({self.ip}, Ray node {self.node_id[:8]}…)"


def node_affinity(node_id: str) -> Any:
    """Ray's scheduling strategy that pins a task or actor to this node (not soft)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


# --- what runs on the nodes (through their agents) ---
def probe(plugins: list[PluginHooks], worker: Worker, image: Image | None = None) -> dict[str, Any]:
    """What a node has, and whether the plugins would accept it (checked here, so that choosing and checking
    the nodes is one round): `refusal` is the exception validate raised, or None."""
    import ray

    from ...backend import open_backend

    out: dict[str, Any] = dict(
        ip=ray.util.get_node_ip_address(),
        hostname=socket.gethostname(),
        gpus=[],
        error=None,
        refusal=None,
        missing=image.missing() if image is not None else [],
    )
    try:
        backend = open_backend()
        try:
            out["gpus"] = [dict(index=g.index, name=g.name, mig_capable=g.mig_capable) for g in backend.gpus()]
        finally:
            backend.close()
    except MigpoolError as e:
        out["error"] = str(e)
        return out
    node = Node(0, 1, Local(), worker)
    try:
        chain.validate(plugins, node)
    except Exception as e:  # noqa: BLE001 - reported for the node, if it is chosen
        out["refusal"] = e
    finally:
        node.close()
    return out


def prepare(
    plugins: list[PluginHooks], worker: Worker, index: int, count: int
) -> tuple[list[Partition], list[PluginHooks]]:
    """The plugin chain on this node (validate, bootstrap; a failed bootstrap is rolled back here)."""
    node = Node(index, count, Local(), worker)
    try:
        chain.prepare(plugins, node)
        return node.partitions, plugins
    finally:
        node.close()


def finish(
    plugins: list[PluginHooks],
    worker: Worker,
    index: int,
    count: int,
    undo: bool,
    pids: Sequence[int] = (),
    wait_s: float = 30.0,
) -> None:
    """Tear the plugins down on this node (or undo them), once the pool's worker processes here have exited."""
    wait_gone(pids, wait_s)
    node = Node(index, count, Local(), worker)
    try:
        chain.finish(plugins, node, undo=undo)
    finally:
        node.close()


class NodeAgent:
    """migpool's helper on a node (0 CPU, owned by the driver, reused by its later pools): runs the probe and
    the plugins' bootstrap and teardown there, so a pool's start pays no cold Ray worker for them."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


_AGENTS: dict[tuple[str, str], Any] = {}  # (Ray job, node id) -> this driver's agent there


def agent(node_id: str) -> Any:
    """migpool's agent actor on this node (made on first use, kept for this driver's later pools)."""
    import ray

    key = (ray.get_runtime_context().get_job_id(), node_id)
    if key not in _AGENTS:
        _AGENTS[key] = ray.remote(NodeAgent).options(num_cpus=0, scheduling_strategy=node_affinity(node_id)).remote()
    return _AGENTS[key]


def forget_agent(node_id: str) -> None:
    """The agent on this node died (its node restarted, say): the next call makes another."""
    import ray

    _AGENTS.pop((ray.get_runtime_context().get_job_id(), node_id), None)


def gpus_on(worker: Worker, index: int, count: int, indices: list[int]) -> list[tuple[int, GpuModel, Any]]:
    """The GPUs of this node that dynamic MIG may change (on the node, for dynamic MIG's RaySite)."""
    node = Node(index, count, Local(), worker)
    try:
        return gpus_here(node.backend, indices)
    finally:
        node.close()


def change_on(
    worker: Worker,
    index: int,
    count: int,
    gpu: int,
    create: list[PlannedInstance],
    destroy: list[PlannedInstance],
    pids: Sequence[int],
    lease: LeaseKey | None,
) -> list[Partition]:
    """Change one GPU of this node's layout (on the node, for dynamic MIG's RaySite); the partitions made."""
    node = Node(index, count, Local(), worker)
    try:  # in the node's agent, which holds the pool's leases there
        return change_here(node.backend, gpu, index, create, destroy, pids, lease)
    finally:
        node.close()


def unwrap(e: BaseException) -> BaseException:
    """The exception a Ray task raised, as itself where Ray kept it."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
