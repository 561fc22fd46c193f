"""A pool over a Ray cluster: one Ray actor per MIG partition, behind migpool's own scheduler.

Ray does the cluster (nodes, processes, transport, scheduling of actors to nodes); migpool does MIG: on each
chosen node a task pinned there (node affinity, not soft) runs the plugins' validate and bootstrap, with every
refusal the local path has. Each worker is an actor pinned to its node with `num_gpus=0` (Ray's GPU ids know
nothing of MIG profiles, so Ray must not touch CUDA_VISIBLE_DEVICES) and `CUDA_VISIBLE_DEVICES=MIG-<uuid>` in
its runtime_env, set before its process starts. The actors are slots of the same Scheduler as local worker
processes: same routing, retries, timeouts, streaming and exactly-once ends.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import itertools
import logging
import os
import pickle
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import MigpoolError, PluginError, RemoteError
from ...host.leases import LeaseKey
from ...host.proc import wait_gone
from ...mig.catalog import GpuModel
from ...mig.planner import PlannedInstance
from ..api.image import Image
from ..api.info import Partition, topology_env
from ..api.providers import Local, Node, PluginHooks, Ray, Worker, WorkerSpec, mark_shared_gpus, worker_pythonpath
from ..dynamic.site import Gpu, GpuState, change_here, gpus_here
from ..scheduler.core import POLL_S, Job, Scheduler, WorkerProcess
from ..shared.proxies import install, refused
from ..shared.state import Holder, SharedState, Waiter
from ..wire.messages import Feed, Paused, RunTask, Stop, TaskDone, TaskFailed, ToWorker, Want, Yielded
from ..wire.pickling import dumps, dumps_out_of_band
from ..wire.streams import WINDOW
from ..worker import chain, lifecycle
from ..worker.distributed import run_initializers
from ..worker.main import Runner

# Ray would blank CUDA_VISIBLE_DEVICES for num_gpus=0 actors if this asked it to: pin it off for ours
RAY_OVERRIDE_ENV = "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"
RAY_BATCH = 256  # most messages sent to an actor in one call
FETCH_WAIT_S = 30.0  # longest a slot waits for its actor's large results before stopping it
RAY_INLINE_MAX = 1 << 20  # a value this big or bigger travels through Ray's object store, not in the batch
RAY_PREFETCH_BUDGET_S = 0.05  # keep about this much work queued at each actor (a call costs about a millisecond)
HEAD_PORT = 29500  # instance_info().head_port on a Ray pool: torch.distributed's usual master port, on node 0
SHARED_ENV = "MIGPOOL_SHARED_ACTOR"  # the name of the Ray actor that serves a pool's collections


@dataclass
class RayNode:
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


# --- what runs on the nodes (as Ray tasks and actors) ---
def _probe(plugins: list[PluginHooks], worker: Worker, image: Image | None = None) -> dict[str, Any]:
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


def _prepare(
    plugins: list[PluginHooks], worker: Worker, index: int, count: int
) -> tuple[list[Partition], list[PluginHooks]]:
    """The plugin chain on this node (validate, bootstrap; a failed bootstrap is rolled back here)."""
    node = Node(index, count, Local(), worker)
    try:
        chain.prepare(plugins, node)
        return node.partitions, plugins
    finally:
        node.close()


def _finish(
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


_AGENTS: dict[tuple[str, str], Any] = {}  # (Ray job, node id) -> this driver's agent there


class NodeAgent:
    """migpool's helper on a node (0 CPU, owned by the driver, reused by its later pools): runs the probe and
    the plugins' bootstrap and teardown there, so a pool's start pays no cold Ray worker for them."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


class InStore:
    """A value that travels through Ray's object store (a large argument, result or stream item, or a value
    stored with `put`): Ray moves it once, and maps NumPy arrays without a copy where it can."""

    __slots__ = ("ref", "nbytes")

    def __init__(self, ref: Any, nbytes: int) -> None:
        self.ref, self.nbytes = ref, nbytes

    def __reduce__(self) -> tuple[Any, ...]:
        return InStore, (self.ref, self.nbytes)


def _size(obj: Any) -> int:
    """How many bytes `obj` pickles to, counting its buffers without copying them."""
    body, buffers = dumps_out_of_band(obj)
    return len(body) + sum(b.raw().nbytes for b in buffers)


class RayCodec:
    """How a Ray pool's values travel: small ones pickled inside the batched messages, large ones (and stored
    values) through Ray's object store, so that a large result never holds up the other answers of its actor.
    An actor's large result belongs to the actor until the driver has it: the slot stops its actor only once
    every such result has arrived (RayWorkerSlot.kill)."""

    def pack(self, obj: Any) -> Any:
        body, buffers = dumps_out_of_band(obj)  # pickled once: a value without buffers is sent as it is
        size = len(body) + sum(b.raw().nbytes for b in buffers)
        if size < RAY_INLINE_MAX:
            return dumps(obj) if buffers else body
        import ray

        return InStore(ray.put(obj), size)

    def store(self, obj: Any) -> Any:
        import ray

        return InStore(ray.put(obj), _size(obj))

    def unpack(self, data: Any, shared: bool = False) -> Any:
        if not isinstance(data, InStore):
            return pickle.loads(data)
        import ray

        return ray.get(data.ref)

    def released(self, items: list[tuple[int, bool]], peer: int) -> None:
        """Nothing to take back: Ray's store frees what no ref names."""

    def peer_gone(self, peer: int) -> None:
        """As released."""

    def tidy(self) -> None:
        """As released."""

    def close(self) -> None:
        """As released."""


class RayLink:
    """A Ray actor's side of a stream: the task runs on a thread of the actor (WorkerActor.stream) while the
    driver takes its items, feeds its input and cancels it through the actor's methods, which run in between."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: collections.deque[Any] = collections.deque()
        self.wants: dict[int, int] = {}
        self.feeds: dict[int, collections.deque[tuple[Any, int]]] = {}
        self.cancelled: set[int] = set()  # kept across tasks: a cancel may come before its task starts
        self.final: TaskDone | TaskFailed | Paused | None = None

    def begin(self) -> None:
        with self.cond:
            self.items.clear()
            self.wants.clear()
            self.feeds.clear()
            self.final = None

    def emit(self, tid: int, item: Any) -> bool:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) < WINDOW or tid in self.cancelled)
            if tid in self.cancelled:
                return False
            self.items.append(item)
            self.cond.notify_all()
            return True

    def want(self, tid: int, sid: int, n: int) -> None:
        with self.cond:
            self.wants[sid] = self.wants.get(sid, 0) + n
            self.cond.notify_all()

    def checkpointed(self, tid: int, done: float | None, total: float | None) -> bool:
        """A checkpoint task on Ray runs to its end: dynamic MIG moves tasks on local pools only."""
        return False

    def next_feed(self, tid: int, sid: int) -> tuple[Any, int]:
        with self.cond:
            q = self.feeds.setdefault(sid, collections.deque())
            self.cond.wait_for(lambda: bool(q))
            return q.popleft()

    def end(self, frame: TaskDone | TaskFailed | Paused) -> None:
        with self.cond:
            self.final = frame
            self.cond.notify_all()

    def take(self, wait_s: float) -> tuple[list[Any], dict[int, int], TaskDone | TaskFailed | Paused | None]:
        """What the task sent since the last take: its items, its requests for input, and its last frame once it
        ended (after its last item). Waits up to `wait_s` for any of them."""
        with self.cond:
            self.cond.wait_for(lambda: self.items or self.wants or self.final is not None, wait_s)
            items, wants = list(self.items), dict(self.wants)
            self.items.clear()
            self.wants.clear()
            self.cond.notify_all()
            return items, wants, self.final

    def feed(self, sid: int, feeds: list[Feed]) -> None:
        with self.cond:
            self.feeds.setdefault(sid, collections.deque()).extend((f.data, f.state) for f in feeds)
            self.cond.notify_all()

    def cancel(self, tid: int) -> None:
        with self.cond:
            self.cancelled.add(tid)
            self.cond.notify_all()


class SharedActor:
    """The Ray actor that serves one Ray pool's collections (shared.py), named after the pool so that every
    worker actor and the driver find it. An asyncio actor: a call that waits (a queue's get, a barrier, a lock)
    awaits its answer without holding up the others; all of them run on its one event loop thread."""

    def __init__(self) -> None:
        self.state = SharedState()

    async def call(self, pid: int, thread: int, cid: int, kind: str, name: str, op: str, args: tuple[Any, ...]) -> Any:
        import asyncio

        now: list[tuple[bool, Any]] = []
        fut: Any = None

        def answer(ok: bool, value: Any) -> None:  # (on this loop's thread: from this call or another one)
            if fut is None:
                now.append((ok, value))
            elif not fut.done():
                fut.set_result((ok, value))

        self.state.call(Waiter(Holder(pid, thread), cid, answer), kind, name, op, args)
        if now:  # (the usual call: answered at once, no future)
            return now[0]
        fut = asyncio.get_running_loop().create_future()
        return await fut

    async def withdraw(self, pid: int, thread: int, cid: int) -> bool:
        return self.state.withdraw(Holder(pid, thread), cid)

    async def gone(self, pid: int) -> None:
        self.state.gone(pid)


class RayTransport:
    """Calls on a Ray pool's collections, from its driver or from its worker actors (shared.Transport). The
    actor is made by the first caller (detached, so that it outlives that caller) and killed when the pool
    closes (RayPool.close); a Ray cluster that migpool started for the pool ends with it in any case."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._actor: Any = None
        self._ids = itertools.count()

    def actor(self, make: bool = True) -> Any:
        import ray

        if self._actor is None:
            cls = ray.remote(SharedActor)
            if make:
                self._actor = cls.options(
                    name=self.name, lifetime="detached", get_if_exists=True, num_cpus=0, max_concurrency=10_000
                ).remote()
            else:
                try:
                    self._actor = ray.get_actor(self.name)
                except ValueError:  # nobody used a collection: it was never made
                    return None
        return self._actor

    def call(self, kind: str, name: str, op: str, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        import ray

        actor = self.actor()
        pid, thread, cid = os.getpid(), threading.get_ident(), next(self._ids)
        ref = actor.call.remote(pid, thread, cid, kind, name, op, args)
        try:
            ok, value = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            ray.get(actor.withdraw.remote(pid, thread, cid))  # answered now with TIMED_OUT, unless it was already
            ok, value = ray.get(ref)
        if not ok:
            raise refused(value)
        return value

    def gone(self, pid: int) -> None:
        """A worker actor died: its waiting calls go, the locks it held are released."""
        actor = self.actor(make=False)
        if actor is not None:
            actor.gone.remote(pid)

    def close(self) -> None:
        import ray

        actor = self.actor(make=False)
        self._actor = None
        if actor is None:
            return
        with contextlib.suppress(Exception):  # already gone with its cluster
            ray.kill(actor, no_restart=True)
        # ray.kill only asks: the name stays registered until the actor is dead. Wait (bounded) so that the pool's
        # collections are gone when close() returns.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                ray.get_actor(self.name)
            except (ValueError, ray.exceptions.RayError, ConnectionError):  # no such actor any more, or no cluster
                return
            time.sleep(0.02)


class WorkerActor:
    """One migpool worker on a Ray node: its process started with the partition's environment."""

    def __init__(self, plugins: list[PluginHooks], spec: WorkerSpec, count: int) -> None:
        self.link = RayLink()
        self.runner = Runner(RayCodec(), self.link)
        self.streaming: threading.Thread | None = None  # the thread running a stream task; take() joins it
        if SHARED_ENV in spec.env:  # the pool's collections, for its tasks (an actor made outside a pool has none)
            install(RayTransport(spec.env[SHARED_ENV]))
        run_initializers()  # a plugin's set-up for this process (torch.distributed: its rank)
        self.around = lifecycle.enter()  # Plugin.create(...).with_around_process (for the actor's life)
        node = Node(spec.node, count, Local(), None)
        try:
            for p in plugins:  # e.g. the simulator's record of processes on partitions
                p.worker_started(spec, os.getpid(), node)
        finally:
            node.close()

    def ready(self) -> dict[str, Any]:
        return dict(pid=os.getpid(), cuda=os.environ.get("CUDA_VISIBLE_DEVICES"))

    def run(self, msgs: list[ToWorker]) -> list[TaskDone | TaskFailed | Paused]:
        out = []
        for m in msgs:
            if isinstance(m, RunTask) and m.streams:
                self._stream(m)  # its items and its end go out through take()
                continue
            frame = self.runner.handle(m)
            if frame is not None:
                out.append(frame)
        return out

    def _stream(self, msg: RunTask) -> None:
        self.link.begin()
        t = threading.Thread(
            target=lambda: self.link.end(self.runner.run(msg)), name=f"migpool-stream-{msg.tid}", daemon=True
        )
        self.streaming = t
        t.start()

    def take(self, wait_s: float) -> tuple[list[Any], dict[int, int], TaskDone | TaskFailed | Paused | None]:
        items, wants, final = self.link.take(wait_s)
        if final is not None and self.streaming is not None:
            self.streaming.join()
            self.streaming = None
        return items, wants, final

    def feed(self, sid: int, feeds: list[Feed]) -> None:
        self.link.feed(sid, feeds)

    def cancel(self, tid: int) -> None:
        self.link.cancel(tid)


# --- the driver side ---
class RayWorkerSlot(WorkerProcess):
    """A Scheduler slot whose worker is a Ray actor: messages go out in batches, frames come back in order."""

    def __init__(self, sched: Scheduler, spec: WorkerSpec, pool: RayPool) -> None:
        super().__init__(sched, spec)
        self.pool = pool
        self.actor: Any = None
        self.node = pool.nodes[spec.node]
        self.fetched = threading.Condition()
        self.fetching = 0  # large results on their way from the actor's object store

    def spawn(self) -> None:
        self.ready.clear()
        self.sent_fns = set()
        self.sent_values = set()
        self.timed_out = False
        self.writer_q = queue.SimpleQueue()
        self.actor = self.pool.actor_class.options(
            num_cpus=0,
            num_gpus=0,
            max_restarts=0,
            max_concurrency=1,
            scheduling_strategy=node_affinity(self.node.node_id),
            runtime_env=self.pool.runtime_env(self.spec),
        ).remote(self.node.plugins, self.spec, len(self.pool.nodes))
        with self.sched.lock:
            closed = self.sched.closed
        if closed:  # the pool closed while this one started (a restart): it goes at once
            self.kill()
        refs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threads = self.sched.threads
        threads.start(f"{self.name}-writer", self._writer_loop, self.actor, self.writer_q, refs)
        threads.start(f"{self.name}-reader", self._reader_loop, self.actor, refs)

    def _writer_loop(self, actor: Any, wq: queue.SimpleQueue[ToWorker | None], refs: queue.SimpleQueue[Any]) -> None:
        """Messages to the actor in batches; a stream task goes alone, and its reader drives it (_drive)."""
        while True:
            msg = wq.get()
            if msg is None or isinstance(msg, Stop):
                refs.put(None)
                return
            batch = [msg]
            while len(batch) < RAY_BATCH and not _streams(batch[-1]):
                try:
                    more = wq.get_nowait()
                except queue.Empty:
                    break
                if more is None or isinstance(more, Stop) or _streams(more):
                    wq.put(more)  # the end goes last; a stream task starts the next batch
                    break
                batch.append(more)
            ref = actor.run.remote(batch)
            last = batch[-1]
            refs.put((last.tid, ref) if isinstance(last, RunTask) and last.streams else ref)

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
                    if self._past_deadline():
                        raise _KilledForTimeoutError from None
                    continue
                if ref is None:
                    return
                stream = None
                if isinstance(ref, tuple):
                    stream, ref = ref
                while not ray.wait([ref], timeout=POLL_S)[0]:
                    if self._past_deadline():
                        raise _KilledForTimeoutError
                for frame in ray.get(ref):
                    self.resolve(frame)
                if stream is not None:
                    self._drive(actor, stream)
                self.sched.pump()
        except _KilledForTimeoutError:
            how = "was stopped"
        except Exception as e:  # noqa: BLE001 - the actor or its node is gone: every job still ends once
            how = self._how(e)
        with self.sched.lock:
            self.ready.clear()
        self.writer_q.put(None)
        if self.stats.pid:
            self.pool.shared.gone(self.stats.pid)
        self.ended(was_ready, how)

    def _drive(self, actor: Any, tid: int) -> None:
        """Run a stream task's side here: take its items while its consumer has room, feed its input as it asks,
        until its last frame."""
        import ray

        with self.sched.lock:
            job = self.outstanding[0] if self.outstanding and self.outstanding[0].id == tid else None
        while True:
            if self._past_deadline():
                raise _KilledForTimeoutError
            if job is not None and job.stream is not None and not job.stream.wait_room(POLL_S):
                continue
            items, wants, final = ray.get(actor.take.remote(POLL_S))
            for item in items:
                self.resolve(Yielded(tid, item))
            for sid, n in wants.items():
                self.resolve(Want(tid, sid, n))
            if final is not None:
                self.resolve(final)
                return

    def deliver(self, job: Job, result: Any) -> None:
        """A large result comes from Ray's object store without holding up this actor's other answers."""
        if job.stream is None and isinstance(result, InStore):
            fut = job.future
            with self.fetched:
                self.fetching += 1

            def done(f: Any) -> None:
                try:
                    fut.set_result(f.result())
                except Exception as e:  # noqa: BLE001 - the object was lost with its node, say
                    fut.set_exception(RemoteError(f"the task's result could not be fetched from Ray: {e!r}"))
                with self.fetched:
                    self.fetching -= 1
                    self.fetched.notify_all()

            result.ref.future().add_done_callback(done)
            return
        super().deliver(job, result)

    def feed(self, job: Job, sid: int, n: int) -> None:
        feeds = self.sched.read_input(job, sid, n)
        if feeds and self.actor is not None:
            self.actor.feed.remote(sid, feeds)

    def cancel(self, job: Job) -> None:
        if self.actor is not None:
            self.actor.cancel.remote(job.id)

    def credit(self, job: Job, n: int) -> None:
        """Nothing to send: the reader takes a stream's items only while its consumer has room."""

    def _past_deadline(self) -> bool:
        deadline = self.head_deadline()
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
                self.sched.some_dead = True
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

        with self.fetched:  # the actor owns its large results until they arrive here
            self.fetched.wait_for(lambda: self.fetching == 0, FETCH_WAIT_S)
        if self.actor is not None:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(self.actor, no_restart=True)

    def stop(self, timeout: float) -> None:
        """Retire the actor: its node waits for the process to end before its partition goes (RaySite)."""
        self.writer_q.put(Stop())
        self.kill()


def _streams(msg: Any) -> bool:
    """Whether a message starts a task that streams (out, in or both): it runs on a thread of the actor, which
    the driver reaches between its items."""
    return type(msg) is RunTask and msg.streams != 0


class _KilledForTimeoutError(Exception):
    """The task at hand ran past its timeout: the actor was killed."""


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
        self.slots: list[RayWorkerSlot] = []
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

    def agent(self, node_id: str) -> Any:
        """migpool's agent actor on this node (made on first use, kept for this driver's later pools)."""
        import ray

        key = (ray.get_runtime_context().get_job_id(), node_id)
        if key not in _AGENTS:
            _AGENTS[key] = (
                ray.remote(NodeAgent).options(num_cpus=0, scheduling_strategy=node_affinity(node_id)).remote()
            )
        return _AGENTS[key]

    def _on_each(self, fn: Callable[..., Any], nodes: list[Any], args: Callable[[Any], tuple[Any, ...]]) -> list[Any]:
        """Run fn on each node (through its agent, pinned there); a result per node, or the exception it raised."""
        import ray

        ids = [n["NodeID"] if isinstance(n, dict) else n.node_id for n in nodes]
        refs = [self.agent(i).call.remote(fn, *args(n)) for i, n in zip(ids, nodes, strict=False)]
        out = []
        for node_id, n, ref in zip(ids, nodes, refs, strict=False):
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError:  # the agent died (its node restarted, say): once more, afresh
                _AGENTS.pop((ray.get_runtime_context().get_job_id(), node_id), None)
                try:
                    out.append(ray.get(self.agent(node_id).call.remote(fn, *args(n))))
                except Exception as e:  # noqa: BLE001
                    out.append(_unwrap(e))
            except Exception as e:  # noqa: BLE001 - sorted out by the caller, per node
                out.append(_unwrap(e))
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
        probes = self._on_each(_probe, alive, lambda n: (self.plugins, self.worker, self.image))
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
        """Choose and prepare the nodes (the plugin chain on each: all or none); the workers' specs."""
        self._connect()
        self.nodes, refusals = self._choose(self.want_nodes, any(p.needs_mig for p in self.plugins))
        count = len(self.nodes)
        worker = self.worker
        self._raise_first(refusals, "refused")
        results = self._on_each(_prepare, self.nodes, lambda r: (self.plugins, worker, r.index, count))
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
        env = dict(
            self.image.env,
            MIGPOOL_WORKER_INDEX=str(i),
            MIGPOOL_NODE_INDEX=str(r.index),
            MIGPOOL_NODE_COUNT=str(len(self.nodes)),
            MIGPOOL_CONCURRENCY=str(n),
            MIGPOOL_GLOBAL_WORKER_INDEX=str(first),
            MIGPOOL_TOTAL_WORKERS=str(total),
            MIGPOOL_ACCELERATORS=str(len(r.partitions) or int(part is not None)),
            PYTHONUNBUFFERED="1",
        )
        env[SHARED_ENV] = self.shared.name
        env.update(self.topology)
        env[RAY_OVERRIDE_ENV] = "0"
        if part:
            env["MIGPOOL_PARTITION"] = part.to_env()
        spec = WorkerSpec(i, "", env, part, node=r.index, where=r.describe())
        for p in self.plugins:
            spec.env.update(p.around_process(spec))
        return spec

    def runtime_env(self, spec: WorkerSpec) -> dict[str, Any]:
        env: dict[str, Any] = {"env_vars": {"PYTHONPATH": worker_pythonpath(), **spec.env}}
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


def _gpus_on(worker: Worker, index: int, count: int, indices: list[int]) -> list[tuple[int, GpuModel, Any]]:
    node = Node(index, count, Local(), worker)
    try:
        return gpus_here(node.backend, indices)
    finally:
        node.close()


def _change_on(
    worker: Worker,
    index: int,
    count: int,
    gpu: int,
    create: list[PlannedInstance],
    destroy: list[PlannedInstance],
    pids: Sequence[int],
    lease: LeaseKey | None,
) -> list[Partition]:
    node = Node(index, count, Local(), worker)
    try:  # in the node's agent, which holds the pool's leases there
        return change_here(node.backend, gpu, index, create, destroy, pids, lease)
    finally:
        node.close()


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
            return ray.get(
                self.pool.agent(r.node_id).call.remote(fn, self.pool.worker, r.index, len(self.pool.nodes), *args)
            )
        except Exception as e:  # noqa: BLE001 - raised as the node's own error
            raise _unwrap(e) from None

    def gpus(self) -> list[GpuState]:
        out: list[GpuState] = []
        for r in self.pool.nodes:
            options = next(o for p in r.plugins if (o := p.dynamic_mig()) is not None)
            for i, m, f in self._call(r, _gpus_on, list(options.gpus)):
                out.append(((r.index, i), m, f))
        return out

    def change(
        self, gpu: Gpu, create: list[PlannedInstance], destroy: list[PlannedInstance], pids: Sequence[int] = ()
    ) -> list[Partition]:
        r = self.pool.nodes[gpu[0]]
        options = next(o for p in r.plugins if (o := p.dynamic_mig()) is not None)
        return self._call(r, _change_on, gpu[1], create, destroy, list(pids), options.lease)

    def start_worker(self, part: Partition) -> WorkerProcess:
        sched = self.sched
        r = self.pool.nodes[part.node]
        i = next(self._ids)
        return sched.add_worker(self.pool.spec(r, i, len(sched.workers) + 1, i, len(sched.workers) + 1, part))


def _unwrap(e: BaseException) -> BaseException:
    """The exception a Ray task raised, as itself where Ray kept it."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
