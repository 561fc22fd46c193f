"""A pool over a Ray cluster: one Ray actor per MIG partition, behind migpool's own scheduler.

Ray does the cluster (nodes, processes, transport, scheduling of actors to nodes); migpool does MIG: on each
chosen node a task pinned there (node affinity, not soft) runs the plugins' validate and bootstrap, with every
refusal the local path has. Each worker is an actor pinned to its node with `num_gpus=0` (Ray's GPU ids know
nothing of MIG profiles, so Ray must not touch CUDA_VISIBLE_DEVICES) and `CUDA_VISIBLE_DEVICES=MIG-<uuid>` in
its runtime_env, set before its process starts. The actors are slots (slot.py) of the same Scheduler as local
worker processes: same routing, capacity gate, retries, timeouts, streaming and exactly-once ends.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import MigpoolError, PluginError
from ..api.image import Image
from ..api.info import Partition, topology_env
from ..api.providers import PluginHooks, Ray, Worker, WorkerSpec, build_worker_spec, mark_shared_gpus
from ..scheduler.core import Scheduler
from .actor import WorkerActor
from .nodes import RAY_OVERRIDE_ENV, RayNode, agent, finish, forget_agent, prepare, probe, unwrap
from .slot import RaySlot
from .transport import SHARED_ENV, RayTransport

HEAD_PORT = 29500  # instance_info().head_port on a Ray pool: torch.distributed's usual master port, on node 0


def _ip_key(ip: str) -> tuple[int, Any]:
    try:
        return (0, ipaddress.ip_address(ip))
    except ValueError:
        return (1, ip)


_POOL_IDS = itertools.count()


class RayPool:
    """Chooses the nodes, prepares them (all or none), starts one actor per partition, and tears down."""

    def __init__(
        self, provider: Ray, plugins: Sequence[PluginHooks], worker: Worker, image: Image, nodes: int | str
    ) -> None:
        self.provider = provider
        self.plugins = list(plugins)
        self.worker = worker
        self.image = image
        self.want_nodes = nodes
        self.nodes: list[RayNode] = []
        self.started_ray = False
        self.actor_class: Any = None
        self.slots: list[RaySlot] = []
        self.topology: dict[str, str] = {}  # what every worker learns of the whole pool (info.topology_env)
        self.shared = RayTransport(f"migpool-shared-{os.getpid()}-{next(_POOL_IDS)}-{os.urandom(4).hex()}")
        self._alive_cache: tuple[float, set[str]] = (0.0, set())

    # --- cluster ---
    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(
                address=self.provider.address, logging_level=logging.WARNING, log_to_driver=True, **self.provider.init
            )
            self.started_ray = True
        self.actor_class = ray.remote(WorkerActor)

    def node_alive(self, node_id: str) -> bool:
        import ray

        when, alive = self._alive_cache
        if time.monotonic() - when > 1.0:
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            self._alive_cache = (time.monotonic(), alive)
        return node_id in alive

    def _on_each(self, fn: Callable[..., Any], nodes: list[Any], args: Callable[[Any], tuple[Any, ...]]) -> list[Any]:
        """Run fn on each node (through its agent, pinned there); a result per node, or the exception it raised."""
        import ray

        ids = [n["NodeID"] if isinstance(n, dict) else n.node_id for n in nodes]
        refs = [agent(i).call.remote(fn, *args(n)) for i, n in zip(ids, nodes, strict=False)]
        out = []
        for node_id, n, ref in zip(ids, nodes, refs, strict=False):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError:  # the agent died (its node restarted, say): once more, afresh
                forget_agent(node_id)
                try:
                    out.append(ray.get(agent(node_id).call.remote(fn, *args(n))))
                except Exception as e:  # noqa: BLE001
                    out.append(unwrap(e))
            except Exception as e:  # noqa: BLE001 - sorted out by the caller, per node
                out.append(unwrap(e))
        return out

    def _choose(self, want: int | str, need_mig: bool) -> tuple[list[RayNode], list[Any]]:
        """The nodes to use, in a stable order (IP, then Ray node id), and what validate said on each."""
        import ray

        alive = [
            n
            for n in ray.nodes()
            if n.get("Alive")
            and (self.provider.node_resource is None or n["Resources"].get(self.provider.node_resource))
        ]
        probes = self._on_each(probe, alive, lambda n: (self.plugins, self.worker, self.image))
        found = []
        for n, pr in zip(alive, probes, strict=False):
            if isinstance(pr, BaseException):
                raise PluginError(
                    f"Ray node {n['NodeID'][:8]}… ({n.get('NodeManagerAddress')}) could not be probed: {pr}"
                )
            if need_mig and not any(g["mig_capable"] for g in pr["gpus"]):
                continue
            r = RayNode(
                0,
                n["NodeID"],
                pr["ip"],
                pr["hostname"],
                pr["gpus"],
                n["Resources"].get("CPU", 1.0),
                missing=pr["missing"],
            )
            found.append((r, pr["refusal"]))
        found.sort(key=lambda rr: (_ip_key(rr[0].ip), rr[0].node_id))
        if want == "all":
            chosen = found
        elif isinstance(want, int) and want >= 1:
            if len(found) < want:
                what = "with a MIG-capable GPU " if need_mig else ""
                raise PluginError(
                    f"the pool asks for {want} Ray node(s) (nodes=, or Nodes(max=) for an elastic pool), but the "
                    f"cluster has {len(found)} {what}alive: "
                    + (", ".join(f"{r.ip} ({r.node_id[:8]}…)" for r, _ in found) or "none")
                    + "; add nodes to the cluster (`ray start --address=...` on each) or ask for fewer"
                )
            chosen = found[:want]
        else:
            raise PluginError(f"nodes must be a positive number or 'all', not {want!r}")
        if not chosen:
            raise PluginError("the Ray cluster has no node " + ("with a MIG-capable GPU" if need_mig else "alive"))
        for i, (r, _) in enumerate(chosen):
            r.index = i
        return [r for r, _ in chosen], [refusal for _, refusal in chosen]

    def open(self) -> list[WorkerSpec]:
        """Choose and prepare the nodes (the plugin chain on each: all or none); the workers' specs."""
        self._connect()
        self.nodes, refusals = self._choose(self.want_nodes, any(p.needs_mig for p in self.plugins))
        count = len(self.nodes)
        worker = self.worker
        self._raise_first(refusals, "refused")
        results = self._on_each(prepare, self.nodes, lambda r: (self.plugins, worker, r.index, count))
        failed = [(r, e) for r, e in zip(self.nodes, results, strict=False) if isinstance(e, BaseException)]
        for r, res in zip(self.nodes, results, strict=False):
            if not isinstance(res, BaseException):
                r.partitions, r.plugins = res
        if failed:
            done = [r for r, res in zip(self.nodes, results, strict=False) if not isinstance(res, BaseException)]
            self._on_each(finish, done, lambda r: (r.plugins, worker, r.index, count, True))
            self._raise_first(results, "failed")
        return self._specs()

    def _raise_first(self, results: list[Any], verb: str) -> None:
        for r, res in zip(self.nodes, results, strict=False):
            if isinstance(res, BaseException):
                cls = type(res) if isinstance(res, MigpoolError) else PluginError
                others = (
                    "; nothing was changed on any node" if verb == "refused" else "; every node was put back as it was"
                )
                try:
                    err = cls(f"{r.describe()} {verb}: {res}{others}")
                except TypeError:
                    err = PluginError(f"{r.describe()} {verb}: {res}{others}")
                raise err from None

    def _specs(self) -> list[WorkerSpec]:
        self.topology = topology_env(
            self.shared.name.rsplit("-", 1)[-1],
            [r.ip for r in self.nodes],
            HEAD_PORT,
            sum(len(r.partitions) for r in self.nodes),
        )
        if any(p.dynamic_mig() is not None for p in self.plugins):
            return []  # workers come and go with their partitions (RaySite)
        per_node = []
        for r in self.nodes:
            n = self.worker.concurrency or len(r.partitions) or 1  # (1 per node: the reference's default)
            if r.partitions and n != len(r.partitions):
                raise PluginError(
                    f"concurrency={n} but the plugins made {len(r.partitions)} partitions on "
                    f"{r.describe()}; they must agree"
                )
            per_node.append(n)
        total = sum(per_node)
        specs: list[WorkerSpec] = []
        for r, n in zip(self.nodes, per_node, strict=True):
            mine = [
                self.spec(r, i, n, len(specs) + i, total, r.partitions[i] if r.partitions else None) for i in range(n)
            ]
            mark_shared_gpus(mine)  # (per node: another node's GPUs are other GPUs)
            specs += mine
        return specs

    def spec(self, r: RayNode, i: int, n: int, first: int, total: int, part: Partition | None) -> WorkerSpec:
        """Worker `i` of `n` on node `r` (`first`: its index among the pool's `total`), pinned to `part`."""
        pool_env = {
            "MIGPOOL_ACCELERATORS": str(len(r.partitions) or int(part is not None)),
            SHARED_ENV: self.shared.name,
            **self.topology,
            RAY_OVERRIDE_ENV: "0",
        }
        return build_worker_spec(
            i,
            n,
            part,
            self.image.env,
            self.plugins,
            node=r.index,
            node_count=len(self.nodes),
            first=first,
            total=total,
            pool_env=pool_env,
            where=r.describe(),
            buffer=self.worker.buffer,
        )

    def runtime_env(self, spec: WorkerSpec) -> dict[str, Any]:
        env: dict[str, Any] = {"env_vars": dict(spec.env)}
        missing = self.nodes[spec.node].missing
        if missing:  # as locally: nothing is installed where the node's Python already satisfies the Image
            env["pip"] = {"packages": missing, "pip_check": False}
        return env

    def slot(self, sched: Scheduler, spec: WorkerSpec) -> RaySlot:
        s = RaySlot(sched, spec, self)
        self.slots.append(s)
        return s

    def close(self, restore_error: bool = False) -> None:
        import ray

        if self.nodes:
            alive = [r for r in self.nodes if self.node_alive(r.node_id)]
            pids = {r.index: [s.stats.pid for s in self.slots if s.spec.node == r.index and s.stats.pid] for r in alive}
            results = self._on_each(
                finish,
                alive,
                lambda r: (r.plugins, self.worker, r.index, len(self.nodes), False, pids[r.index]),
            )
            self.nodes = []
            problems = [
                f"{r.describe()}: {e}" for r, e in zip(alive, results, strict=False) if isinstance(e, BaseException)
            ]
            if problems and not restore_error:
                raise MigpoolError("tearing down the pool failed on " + "; ".join(problems))
        self.shared.close()
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False
