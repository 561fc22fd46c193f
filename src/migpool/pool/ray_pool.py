"""A pool over a Ray cluster: one Ray actor per MIG partition, behind migpool's own scheduler.

Ray does the cluster (nodes, processes, transport, scheduling of actors to nodes); migpool does MIG: on each
chosen node a task pinned there (node affinity, not soft) runs the plugins' validate and bootstrap, with every
refusal the local path has. Each worker is an actor pinned to its node with `num_gpus=0` (Ray's GPU ids know
nothing of MIG profiles, so Ray must not touch CUDA_VISIBLE_DEVICES) and `CUDA_VISIBLE_DEVICES=MIG-<uuid>` in
its runtime_env, set before its process starts. The actors are slots of the same Scheduler as local worker
processes: same routing, retries, timeouts, streaming and exactly-once ends.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MigpoolError, PluginError
from .dynamic import Gpu, change_here, gpus_here
from .info import Partition
from .scheduler import POLL_S, Scheduler, WorkerProcess, WorkerSpec
from .worker import Runner

if TYPE_CHECKING:
    from ..catalog import GpuModel
    from ..planner import PlannedInstance
    from .compute import Compute

# Ray would blank CUDA_VISIBLE_DEVICES for num_gpus=0 actors if this asked it to: pin it off for ours
RAY_OVERRIDE_ENV = "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"
RAY_BATCH = 256  # most messages sent to an actor in one call
RAY_PREFETCH_BUDGET_S = 0.05  # keep about this much work queued at each actor (a call costs about a millisecond)


@dataclass(frozen=True)
class Ray:
    """Run the pool on a Ray cluster. `address`: "auto" (the cluster this machine belongs to), "ray://head:10001"
    (Ray Client), or None (a local Ray started for the pool). `node_resource`: use only nodes that offer this
    custom Ray resource (`ray start --resources='{"mig": 1}'`). `init` holds more ray.init() arguments.

    Your own modules must import on every node (installed, on a shared filesystem, or shipped with Ray's
    runtime_env through `init`); functions defined in the script itself travel by value."""

    address: str | None = "auto"
    node_resource: str | None = None
    init: dict[str, Any] = field(default_factory=dict)
    distributed = True

    def spec(self) -> str | None:
        return None  # each node reads its own GPUs (or its own MIGPOOL_SIMULATE)


@dataclass
class RayNode:
    index: int
    node_id: str
    ip: str
    hostname: str
    gpus: list[dict[str, Any]]
    cpus: float
    partitions: list[Partition] = field(default_factory=list)
    plugins: list[Any] = field(default_factory=list)  # the plugins as bootstrapped there (their state)
    missing: list[str] = field(default_factory=list)  # the Image's requirements this node's Python lacks

    def describe(self) -> str:
        return f"node {self.index} ({self.ip}, Ray node {self.node_id[:8]}…)"


def _affinity(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


# --- what runs on the nodes (as Ray tasks and actors) ---
def _probe(plugins: list[Any], worker: Any, image: Any = None) -> dict[str, Any]:
    """What a node has, and whether the plugins would accept it (checked here, so that choosing and checking
    the nodes is one round): `refusal` is the exception validate raised, or None."""
    import ray

    from ..backend import open_backend

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
    try:
        _prepare(plugins, worker, 0, 1, apply=False)
    except Exception as e:
        out["refusal"] = e
    return out


def _node_for(index: int, count: int, worker: Any) -> Any:
    from .compute import Local, Node

    return Node(index, count, Local(), worker)


def _prepare(plugins: list[Any], worker: Any, index: int, count: int, apply: bool) -> tuple[list[Partition], list[Any]]:
    """validate (and with `apply`, bootstrap) the plugins on this node; a failed bootstrap is undone here."""
    node = _node_for(index, count, worker)
    try:
        for p in plugins:
            p.validate(node)
        if not apply:
            return [], plugins
        done = []
        try:
            for p in plugins:
                p.bootstrap(node)
                done.append(p)
        except BaseException:
            for p in reversed(done):
                p.rollback(node)
            raise
        return node.partitions, plugins
    finally:
        if node._backend is not None:
            node.backend.close()


def _finish(
    plugins: list[Any], worker: Any, index: int, count: int, undo: bool, pids: Sequence[int] = (), wait_s: float = 30.0
) -> None:
    """Tear the plugins down on this node (or undo them), once the pool's worker processes here have exited."""
    from ..proc import pid_alive

    deadline = time.monotonic() + wait_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    node = _node_for(index, count, worker)
    try:
        for p in reversed(plugins):
            if undo:
                p.rollback(node)
            else:
                p.teardown(node)
    finally:
        if node._backend is not None:
            node.backend.close()


_AGENTS: dict[tuple[str, str], Any] = {}  # (Ray job, node id) -> this driver's agent there


class NodeAgent:
    """migpool's helper on a node (0 CPU, owned by the driver, reused by its later pools): runs the probe and
    the plugins' bootstrap and teardown there, so a pool's start pays no cold Ray worker for them."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


class WorkerActor:
    """One migpool worker on a Ray node: its process started with the partition's environment."""

    def __init__(self, plugins: list[Any], spec: WorkerSpec, count: int) -> None:
        self.runner = Runner()
        node = _node_for(spec.node, count, None)
        for p in plugins:  # e.g. the simulator's record of processes on partitions
            p.worker_started(spec, os.getpid(), node)
        if node._backend is not None:
            node.backend.close()

    def ready(self) -> dict[str, Any]:
        return dict(pid=os.getpid(), cuda=os.environ.get("CUDA_VISIBLE_DEVICES"))

    def run(self, msgs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [f for f in (self.runner.handle(m) for m in msgs) if f is not None]


# --- the driver side ---
class RayWorkerSlot(WorkerProcess):
    """A Scheduler slot whose worker is a Ray actor: messages go out in batches, frames come back in order."""

    def __init__(self, sched: Scheduler, spec: WorkerSpec, pool: RayPool) -> None:
        super().__init__(sched, spec)
        self.pool = pool
        self.actor: Any = None
        self.node = pool.nodes[spec.node]

    def spawn(self) -> None:
        self.ready.clear()
        self.sent_fns = set()
        self.timed_out = False
        self.writer_q = queue.SimpleQueue()
        self.actor = self.pool.actor_class.options(
            num_cpus=0,
            num_gpus=0,
            max_restarts=0,
            max_concurrency=1,
            scheduling_strategy=_affinity(self.node.node_id),
            runtime_env=self.pool.runtime_env(self.spec),
        ).remote(self.node.plugins, self.spec, len(self.pool.nodes))
        refs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._writer_loop, args=(self.actor, self.writer_q, refs), daemon=True).start()
        threading.Thread(target=self._reader_loop, args=(self.actor, refs), daemon=True).start()

    def _writer_loop(self, actor: Any, wq: queue.SimpleQueue[Any], refs: queue.SimpleQueue[Any]) -> None:
        while True:
            msg = wq.get()
            if msg is None or msg[0] == "stop":
                refs.put(None)
                return
            batch = [msg]
            while len(batch) < RAY_BATCH:
                try:
                    more = wq.get_nowait()
                except queue.Empty:
                    break
                if more is None or more[0] == "stop":
                    wq.put(more)
                    break
                batch.append(more)
            refs.put(actor.run.remote(batch))

    def _reader_loop(self, actor: Any, refs: queue.SimpleQueue[Any]) -> None:
        import ray

        was_ready = False
        try:
            info = ray.get(actor.ready.remote())
            self.stats.pid = info["pid"]
            self.startup_failures = 0
            was_ready = True
            self.ready.set()
            self.sched.pump()
            while True:
                try:
                    ref = refs.get(timeout=POLL_S)
                except queue.Empty:
                    if self._past_deadline(actor):
                        raise _Stopped from None
                    continue
                if ref is None:
                    return
                while not ray.wait([ref], timeout=POLL_S)[0]:
                    if self._past_deadline(actor):
                        raise _Stopped
                for frame in ray.get(ref):
                    self._resolve(frame)
                self.sched.pump()
        except _Stopped:
            how = "was stopped"
        except Exception as e:
            how = self._how(e)
        with self.sched.lock:
            self.ready.clear()
        self.writer_q.put(None)
        self._ended(was_ready, how)

    def _past_deadline(self, actor: Any) -> bool:
        deadline = self._head_deadline()
        if deadline is not None and time.monotonic() >= deadline:
            self.timed_out = True
            self.kill()
            return True
        return False

    def _how(self, e: BaseException) -> str:
        if not self.pool.node_alive(self.node.node_id):
            return "was lost with its node (it left the Ray cluster)"
        text = str(e).strip().splitlines()
        detail = next(
            (line for line in text if "exit" in line.lower() or "killed" in line.lower()), text[0] if text else ""
        )
        return f"died ({type(e).__name__}: {detail.strip()[:200]})"

    def respawn(self) -> None:
        if not self.pool.node_alive(self.node.node_id):
            with self.sched.lock:
                self.dead_reason = f"{self.spec.describe()} is gone: its node left the Ray cluster"
                self.ready.set()
            self.sched.fail_unservable()
            return
        self.spawn()

    def capacity(self) -> int:
        if not self.ready.is_set() or self.dead_reason:
            return 0
        depth = max(8, min(RAY_BATCH, int(RAY_PREFETCH_BUDGET_S / self.avg_s)))
        return depth - len(self.outstanding)

    def kill(self) -> None:
        import ray

        if self.actor is not None:
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:
                pass


class _Stopped(Exception):
    pass


def _ip_key(ip: str) -> tuple[int, Any]:
    try:
        return (0, ipaddress.ip_address(ip))
    except ValueError:
        return (1, ip)


class RayPool:
    """Chooses the nodes, prepares them (all or none), starts one actor per partition, and tears down."""

    def __init__(self, compute: Compute) -> None:
        self.compute = compute
        self.provider: Ray = compute.provider  # type: ignore[assignment]
        self.nodes: list[RayNode] = []
        self.started_ray = False
        self.actor_class: Any = None
        self.slots: list[RayWorkerSlot] = []
        self._alive_cache: tuple[float, set[str]] = (0.0, set())

    # --- cluster ---
    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.provider.address, logging_level="WARNING", log_to_driver=True, **self.provider.init)
            self.started_ray = True
        self.actor_class = ray.remote(WorkerActor)

    def node_alive(self, node_id: str) -> bool:
        import ray

        when, alive = self._alive_cache
        if time.monotonic() - when > 1.0:
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            self._alive_cache = (time.monotonic(), alive)
        return node_id in alive

    def _agent(self, node_id: str) -> Any:
        import ray

        key = (ray.get_runtime_context().get_job_id(), node_id)
        if key not in _AGENTS:
            _AGENTS[key] = ray.remote(NodeAgent).options(num_cpus=0, scheduling_strategy=_affinity(node_id)).remote()
        return _AGENTS[key]

    def _on_each(self, fn: Callable[..., Any], nodes: list[Any], args: Callable[[Any], tuple[Any, ...]]) -> list[Any]:
        """Run fn on each node (through its agent, pinned there); a result per node, or the exception it raised."""
        import ray

        ids = [n["NodeID"] if isinstance(n, dict) else n.node_id for n in nodes]
        refs = [self._agent(i).call.remote(fn, *args(n)) for i, n in zip(ids, nodes, strict=False)]
        out = []
        for node_id, n, ref in zip(ids, nodes, refs, strict=False):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError:  # the agent died (its node restarted, say): once more, afresh
                _AGENTS.pop((ray.get_runtime_context().get_job_id(), node_id), None)
                try:
                    out.append(ray.get(self._agent(node_id).call.remote(fn, *args(n))))
                except Exception as e:
                    out.append(_unwrap(e))
            except Exception as e:
                out.append(_unwrap(e))
        return out

    def _choose(self, want: int | str, need_mig: bool) -> tuple[list[RayNode], list[Any]]:
        """The nodes to use, in a stable order (IP, then Ray node id), and what validate said on each."""
        import ray

        c = self.compute
        alive = [
            n
            for n in ray.nodes()
            if n.get("Alive")
            and (self.provider.node_resource is None or n["Resources"].get(self.provider.node_resource))
        ]
        probes = self._on_each(_probe, alive, lambda n: (c.plugins, c.worker, c.image))
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
                    f"nodes={want}, but the Ray cluster has {len(found)} node(s) {what}alive: "
                    + (", ".join(f"{r.ip} ({r.node_id[:8]}…)" for r, _ in found) or "none")
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
        from ..plugins import mig

        c = self.compute
        self._connect()
        self.nodes, refusals = self._choose(c.nodes, any(isinstance(p, mig) for p in c.plugins))
        count = len(self.nodes)
        worker = c.worker
        self._raise_first(refusals, "refused")
        results = self._on_each(_prepare, self.nodes, lambda r: (c.plugins, worker, r.index, count, True))
        failed = [(r, e) for r, e in zip(self.nodes, results, strict=False) if isinstance(e, BaseException)]
        for r, res in zip(self.nodes, results, strict=False):
            if not isinstance(res, BaseException):
                r.partitions, r.plugins = res
        if failed:
            done = [r for r, res in zip(self.nodes, results, strict=False) if not isinstance(res, BaseException)]
            self._on_each(_finish, done, lambda r: (r.plugins, worker, r.index, count, True))
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
        c = self.compute
        if _dynamic_plugin(c.plugins) is not None:
            return []  # workers come and go with their partitions (RaySite)
        per_node = []
        for r in self.nodes:
            n = c.worker.concurrency or len(r.partitions) or max(1, int(r.cpus))
            if r.partitions and n != len(r.partitions):
                raise PluginError(
                    f"concurrency={n} but the plugins made {len(r.partitions)} partitions on "
                    f"{r.describe()}; they must agree"
                )
            per_node.append(n)
        total = sum(per_node)
        specs = []
        for r, n in zip(self.nodes, per_node, strict=False):
            specs += [
                self.spec(r, i, n, len(specs) + i, total, r.partitions[i] if r.partitions else None) for i in range(n)
            ]
        return specs

    def spec(self, r: RayNode, i: int, n: int, first: int, total: int, part: Partition | None) -> WorkerSpec:
        """Worker `i` of `n` on node `r` (`first`: its index among the pool's `total`), pinned to `part`."""
        c = self.compute
        env = dict(
            c.image.env,
            MIGPOOL_WORKER_INDEX=str(i),
            MIGPOOL_NODE_INDEX=str(r.index),
            MIGPOOL_NODE_COUNT=str(len(self.nodes)),
            MIGPOOL_CONCURRENCY=str(n),
            MIGPOOL_GLOBAL_WORKER_INDEX=str(first),
            MIGPOOL_TOTAL_WORKERS=str(total),
            MIGPOOL_ACCELERATORS=str(len(r.partitions) or int(part is not None)),
            PYTHONUNBUFFERED="1",
        )
        env[RAY_OVERRIDE_ENV] = "0"
        if part:
            env["MIGPOOL_PARTITION"] = part.to_env()
        spec = WorkerSpec(i, "", env, part, node=r.index, where=r.describe())
        for p in c.plugins:
            spec.env.update(p.around_process(spec))
        return spec

    def runtime_env(self, spec: WorkerSpec) -> dict[str, Any]:
        from .compute import _user_paths

        paths = os.pathsep.join(_user_paths() + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x])
        env: dict[str, Any] = {"env_vars": {"PYTHONPATH": paths, **spec.env}}
        missing = self.nodes[spec.node].missing
        if missing:  # as locally: nothing is installed where the node's Python already satisfies the Image
            env["pip"] = {"packages": missing, "pip_check": False}
        return env

    def slot(self, sched: Scheduler, spec: WorkerSpec) -> RayWorkerSlot:
        s = RayWorkerSlot(sched, spec, self)
        self.slots.append(s)
        return s

    def close(self, restore_error: bool = False) -> None:
        import ray

        if self.nodes:
            alive = [r for r in self.nodes if self.node_alive(r.node_id)]
            pids = {r.index: [s.stats.pid for s in self.slots if s.spec.node == r.index and s.stats.pid] for r in alive}
            results = self._on_each(
                _finish,
                alive,
                lambda r: (r.plugins, self.compute.worker, r.index, len(self.nodes), False, pids[r.index]),
            )
            self.nodes = []
            problems = [
                f"{r.describe()}: {e}" for r, e in zip(alive, results, strict=False) if isinstance(e, BaseException)
            ]
            if problems and not restore_error:
                raise MigpoolError("tearing down the pool failed on " + "; ".join(problems))
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False


def _dynamic_plugin(plugins: list[Any]) -> Any:
    return next((p for p in plugins if getattr(p, "dynamic", False)), None)


def _gpus_on(worker: Any, index: int, count: int, indices: list[int]) -> Any:
    node = _node_for(index, count, worker)
    try:
        return gpus_here(node.backend, indices)
    finally:
        node.backend.close()


def _change_on(
    worker: Any, index: int, count: int, gpu: int, create: list[Any], destroy: list[Any], pids: Sequence[int]
) -> list[Partition]:
    node = _node_for(index, count, worker)
    try:
        return change_here(node.backend, gpu, index, create, destroy, pids)
    finally:
        node.backend.close()


class RaySite:
    """Dynamic MIG across a Ray pool's nodes: each node's GPUs are changed there, through its agent, and each new
    partition gets a worker actor pinned to that node. One controller (on the driver) sees every node's GPUs, so
    a task goes to an idle partition on any node, else to where one can be made with the least disturbance."""

    def __init__(self, pool: RayPool) -> None:
        self.pool = pool
        self._ids = itertools.count()

    def _call(self, r: RayNode, fn: Callable[..., Any], *args: Any) -> Any:
        import ray

        try:
            return ray.get(
                self.pool._agent(r.node_id).call.remote(
                    fn, self.pool.compute.worker, r.index, len(self.pool.nodes), *args
                )
            )
        except Exception as e:
            raise _unwrap(e) from None

    def gpus(self) -> list[tuple[Gpu, GpuModel, list[PlannedInstance]]]:
        out = []
        for r in self.pool.nodes:
            for i, m, f in self._call(r, _gpus_on, _dynamic_plugin(r.plugins)._selected):
                out.append(((r.index, i), m, f))
        return out

    def change(
        self, gpu: Gpu, create: list[PlannedInstance], destroy: list[PlannedInstance], pids: Sequence[int] = ()
    ) -> list[Partition]:
        return self._call(self.pool.nodes[gpu[0]], _change_on, gpu[1], create, destroy, list(pids))

    def start_worker(self, part: Partition) -> WorkerProcess:
        sched = self.pool.compute._sched
        r = self.pool.nodes[part.node]
        i = next(self._ids)
        return sched.add_worker(self.pool.spec(r, i, len(sched.workers) + 1, i, len(sched.workers) + 1, part))


def _unwrap(e: BaseException) -> BaseException:
    """The exception a Ray task raised, as itself where Ray kept it."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
