"""migpool on Ray: `Compute(provider=migpool.Ray(...), nodes=N)` runs the pool across a Ray cluster (see
migpool.pool.raypool), and `partition_options` places a Ray-native actor on a MIG partition.

    import ray, migpool.ray
    actor = MyActor.options(**migpool.ray.partition_options("1g.10gb")).remote()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import MigpoolError, PluginError
from .pool.api.providers import Ray
from .pool.raypool.nodes import RAY_OVERRIDE_ENV, node_affinity

__all__ = ["Ray", "partition_options", "partitions"]

_handed_out: set[str] = set()


def _node_partitions() -> list[dict[str, Any]]:
    """On a node: its MIG devices, with whether a process uses each."""
    import ray

    from .backend import open_backend

    try:
        backend = open_backend()
    except MigpoolError:  # a node without NVIDIA GPUs (a CPU-only head, say) has no partition
        return []
    try:
        out = []
        for g in backend.gpus():
            if not g.mig_current:
                continue
            busy = {p.device_uuid for p in backend.processes(g.index)}
            out += [
                dict(
                    uuid=d.uuid,
                    profile=d.profile_name,
                    gpu=g.index,
                    busy=d.uuid in busy,
                    node_id=ray.get_runtime_context().get_node_id(),
                    ip=ray.util.get_node_ip_address(),
                )
                for d in backend.mig_devices(g.index)
            ]
        return out
    finally:
        backend.close()


def partitions() -> list[dict[str, Any]]:
    """Every MIG partition of the Ray cluster's alive nodes: uuid, profile, gpu, busy, node_id, ip."""
    import ray

    task = ray.remote(_node_partitions)
    refs = [
        task.options(num_cpus=0, scheduling_strategy=node_affinity(n["NodeID"])).remote()
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return [p for ref in refs for p in ray.get(ref)]


def partition_options(profile: str, node: str | None = None, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """`.options(...)` that put a Ray actor (or task) on a free MIG partition of `profile`: pinned to its node,
    `num_gpus=0` (so Ray leaves the device alone) and `CUDA_VISIBLE_DEVICES=MIG-<uuid>` from its first instruction.

    `node`: a Ray node id or IP to choose from. Each call in this process hands out another partition; a
    partition with a process on it, or in `exclude`, is skipped. The chosen UUID is in
    `options["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"]`."""
    skip = set(exclude) | _handed_out
    everything = partitions()
    fits = [p for p in everything if p["profile"] == profile and (node is None or node in (p["node_id"], p["ip"]))]
    free = [p for p in fits if not p["busy"] and p["uuid"] not in skip]
    if not free:
        have = sorted({p["profile"] for p in everything})
        raise PluginError(
            f"no free {profile} partition"
            + (f" on node {node}" if node else "")
            + " in the Ray cluster: "
            + (
                f"{len(fits)} exist, all in use or handed out"
                if fits
                else f"profiles there: {', '.join(have) or 'none (apply a layout first: migpool apply)'}"
            )
        )
    chosen = free[0]
    _handed_out.add(chosen["uuid"])
    return dict(
        num_gpus=0,
        scheduling_strategy=node_affinity(chosen["node_id"]),
        runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": chosen["uuid"], RAY_OVERRIDE_ENV: "0"}},
    )
