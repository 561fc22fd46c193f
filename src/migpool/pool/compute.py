"""`Compute`: the pool as users see it. It assembles the layers below: the plugin chain (chain.py) on the node
(providers.py), the scheduler and its slots (scheduler/: a worker process each, worker/), Ray's nodes and actors
(raypool/), dynamic MIG's controller and policy on its site (dynamic/), stats and metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from ..accelerators import Accelerator, named
from ..errors import PluginError, PoolBrokenError
from ..observe.poolstats import Publisher
from .api.attempts import on_threads
from .api.cloud import refuse_compute_keywords
from .api.current import entered
from .api.image import Image
from .api.info import InstanceInfo, Partition, set_thread_info, topology_env
from .api.machine import check_machine
from .api.nodes import Nodes, Options, as_nodes
from .api.providers import (
    Cloud,
    DynamicMigOptions,
    Executor,
    Local,
    Node,
    PluginHooks,
    Ray,
    Verda,
    Worker,
    WorkerSpec,
    build_worker_spec,
    mark_shared_gpus,
)
from .api.task import Group, RemoteFunction, Task
from .scheduler.core import Scheduler
from .scheduler.slot import Slot
from .scheduler.spares import settings_for as spare_settings
from .shared import proxies as shared
from .shared.proxies import Barrier, Counter, Dict, LocalTransport, Lock, Queue, Set, Transport
from .shared.state import SharedState
from .wire.messages import ONE_TASK_ENV, THREADS_ENV
from .worker import chain

if TYPE_CHECKING:  # imported where used: a pool without dynamic MIG, Ray or metrics loads none of them
    from .dynamic.controller import DynamicMig
    from .dynamic.site import Site
    from .raypool.pool import RayPool
    from .scheduler.elastic import Elastic

__all__ = ["Compute", "Executor", "Local", "Node", "Nodes", "Options", "Ray", "Verda", "Worker"]


def _free_port() -> int:
    """A TCP port free on this machine now (instance_info().head_port: torch.distributed's master port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collections:
    """The pool's collections, shared by all its tasks: `pool.dict(name)` here is `migpool.dict(name)` inside a
    task. A subclass says where they are served (`_transport`)."""

    def _transport(self) -> Transport:
        raise NotImplementedError

    def dict(self, name: str, *, consistency: str | None = None) -> Dict:
        """The pool's dict `name`, which every task reads and writes as `migpool.dict(name)`."""
        shared.check_consistency(consistency)
        return Dict(name, self._transport())

    def set(self, name: str, *, consistency: str | None = None) -> Set:
        shared.check_consistency(consistency)
        return Set(name, self._transport())

    def counter(self, name: str, *, consistency: str | None = None) -> Counter:
        shared.check_consistency(consistency)
        return Counter(name, self._transport())

    def queue(self, name: str) -> Queue:
        return Queue(name, self._transport())

    def barrier(self, name: str, n: int) -> Barrier:
        return Barrier(name, n, self._transport())

    def lock(self, name: str, timeout: float = 30) -> Lock:
        return Lock(name, timeout, self._transport())


class Views:
    """What an open (or closed) pool tells about itself: its stats, nodes, workers, partitions and controllers.
    `Compute` sets the attributes below."""

    worker: Worker
    executor: str
    distributed: bool
    nodes: int | str
    bounds: Nodes
    node_count: int
    node: Node
    _sched: Scheduler | None
    _threads: ThreadPoolExecutor | None
    _thread_count: int
    _threads_per_worker: int
    _closed: bool
    _dynamic: DynamicMig | None
    _elastic: Elastic | None

    def stats(self) -> dict[str, Any]:
        """Per worker: partition, tasks started/done/failed/lost, running and queued now, busy time, last error."""
        if self._sched is None:
            return dict(pid=os.getpid(), pending=0, workers=[])
        return self._sched.stats() | (self._dynamic.stats() if self._dynamic is not None else {})

    @property
    def is_active(self) -> bool:
        """Whether the pool is open and takes tasks."""
        return (self._sched is not None or self._threads is not None) and not self._closed

    @property
    def concurrency(self) -> int:
        """Tasks each node runs at once (its workers)."""
        if self._threads is not None:
            return self._thread_count
        if self._sched is None:
            return self.worker.concurrency or 0
        if self.executor == "thread" and not self.distributed:  # (a Ray pool's workers are actors)
            return self._threads_per_worker
        return max(1, len(self._sched.workers) // max(1, self.current_nodes()))

    def current_nodes(self) -> int:
        """The pool's nodes now (an elastic pool's change with its load)."""
        if self._elastic is not None:
            return self._elastic.nodes()
        return (self.bounds.start if not self.distributed else self.node_count) if self.is_active else 0

    @property
    def partitions(self) -> list[Partition]:
        """The pool's partitions (with dynamic MIG: those that exist now)."""
        if self._dynamic is not None:
            return self._dynamic.partitions()
        return list(self.node.partitions)

    @property
    def changes(self) -> list[dict[str, Any]]:
        """Dynamic MIG: every partition created or destroyed, when, where and why."""
        return list(self._dynamic.changes) if self._dynamic is not None else []

    @property
    def worker_pids(self) -> list[int]:
        if self._sched is None:
            return []
        return [w.stats.pid for w in self._sched.workers if w.stats.pid]

    @property
    def scheduler(self) -> Scheduler:
        """The pool's scheduler (its queue, workers and threads); only while the pool is open."""
        if self._sched is None:
            raise RuntimeError("the pool is not open: use the Compute as a context manager")
        return self._sched

    @property
    def controller(self) -> DynamicMig | None:
        """Dynamic MIG's controller, with mig(dynamic=True), while the pool is open."""
        return self._dynamic


class Compute(Collections, Views):
    """A pool of workers. Use as a context manager; send tasks with `task >> compute`, `gather(...) >> compute`,
    `compute.submit(task)` or `compute.map(fn, items)`."""

    def __init__(
        self,
        provider: Local | Ray | Cloud | None = None,
        worker: Worker | None = None,
        image: Image | None = None,
        plugins: Sequence[PluginHooks] = (),
        retries: int = 0,
        progress: bool | None = None,
        nodes: int | tuple[int, int] | Nodes | str = 1,
        accelerator: Accelerator | str | None = None,
        metrics_port: int | None = None,
        *,
        executor: Executor | None = None,
        cpus: int | None = None,
        memory_gb: float | None = None,
        options: Options | None = None,
        name: str | None = None,
        console: bool | None = None,
        **reference: Any,
    ) -> None:
        refuse_compute_keywords(reference)
        if isinstance(provider, Cloud):
            raise PluginError(provider.refusal())
        if executor is not None and worker is not None:
            raise PluginError("pass executor= (0.11+) or worker= (0.10), not both: they say the same thing")
        self.provider = provider or Local()
        self.distributed = self.provider.distributed
        self.worker = executor.worker() if executor is not None else worker or Worker()
        self.plugins = list(plugins)
        ray_all = self.distributed and nodes == "all"  # (a Ray pool: every node that serves)
        self.bounds = as_nodes(1 if ray_all else nodes)  # type: ignore[arg-type]
        self.options = options or Options()
        if self.distributed and self.bounds.elastic and self._dynamic_options() is not None:
            raise PluginError(f"{self.bounds} with mig(dynamic=True) on a Ray pool: give it nodes=N")
        self.inline = getattr(self.provider, "inline", False)
        self.executor = self.worker.resolved(any(p.needs_processes for p in self.plugins) or self.distributed)
        if self.inline and (self.executor != "thread" or self.bounds.max != 1):
            raise PluginError(
                "Local(inline=True) runs a thread executor's tasks in this process, on one node: use it with "
                "Executor(type='thread') and nodes=1, or leave inline out"
            )
        self.nodes: int | str = "all" if ray_all else self.bounds.start
        self.node_count = self.bounds.max if not self.distributed else 1  # (a Ray pool's: the nodes it chose)
        self.cpus, self.memory_gb = cpus, memory_gb
        self.accelerator = named(accelerator) if accelerator is not None else None
        self.image = image or Image()
        self.retries = retries
        progress = console if progress is None else progress  # (the reference's console=: its live view)
        self.progress = sys.stdout.isatty() if progress is None else progress
        self.name = name  # shown beside its partitions (`migpool metrics --holders`, `migpool top`)
        # what the plugins see: this machine, with every worker of its simulated nodes
        per_node = self.worker.concurrency
        count = self.node_count
        machine = dataclasses.replace(self.worker, concurrency=per_node * count) if per_node and count > 1 else None
        self.node = Node(0, 1, self.provider, machine or self.worker)
        self._sched: Scheduler | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._bootstrapped: list[PluginHooks] = []
        self._thread_ids = itertools.count()
        self._worker_ids = itertools.count()  # dynamic MIG's workers, numbered as they come
        self._python = sys.executable
        self._image = self.image
        self.metrics_port = metrics_port
        self._publisher: Publisher | None = None
        self._metrics: tuple[Any, Any] | None = None  # (sampler, server) while metrics are served
        self._ray: RayPool | None = None
        self._dynamic: DynamicMig | None = None  # the dynamic MIG controller, with mig(dynamic=True)
        self._shared: Transport | None = None  # where the pool's collections (compute.dict, …) are served
        self._thread_count = 0  # a thread pool's threads
        self._threads_per_worker = 1  # tasks each worker process runs at once (the thread executor: per node)
        self._elastic: Elastic | None = None  # elastic nodes, with Nodes(min < max)
        self._decorators = [p.decorate for p in self.plugins if p.decorates]  # wrap each task's function
        self._decorated: dict[int, tuple[Any, Any]] = {}  # id(fn) -> (fn, its decorated function)
        self._around = contextlib.ExitStack()  # the plugins' around_pool contexts, left when the pool closes
        self._closed = False
        self._closing = threading.RLock()  # one close() at a time: a second, from another thread, waits for it

    # --- lifecycle ---
    def __rrshift__(self, other: object) -> NoReturn:
        raise TypeError(_not_a_task(other, ">>"))

    def __rmatmul__(self, other: object) -> NoReturn:
        raise TypeError(_not_a_task(other, "@"))

    def __enter__(self) -> Compute:
        try:
            self.open()
            self._around.enter_context(entered(self))  # `sky` stands for this pool while it is open
            for cm in (p.around_pool(self) for p in self.plugins):
                if cm is not None:
                    self._around.enter_context(cm)
        except BaseException:
            self.close(error=True)
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close(error=et is not None)

    def _dynamic_options(self) -> DynamicMigOptions | None:
        return next((o for p in self.plugins if (o := p.dynamic_mig()) is not None), None)

    def open(self) -> None:
        image = self.image
        for p in self.plugins:
            image = p.transform_image(image)
        self._image = image
        if self.distributed:
            return self._open_ray()
        check_machine(self.cpus, self.memory_gb)
        if self.accelerator is not None:
            self.accelerator.check([g.name for g in self.node.backend.gpus()])
        if self.node_count > 1 and self._dynamic_options() is not None:
            raise PluginError(
                f"nodes={self.node_count} with mig(dynamic=True): dynamic MIG runs one node per machine; "
                "use nodes=1 (or a Ray pool for several machines)"
            )
        chain.validate(self.plugins, self.node)  # every refusal before an image is built or anything changed
        self._python = sys.executable if self.inline else image.interpreter()
        chain.bootstrap(self.plugins, self.node)
        self._bootstrapped = list(self.plugins)
        parts = self.node.partitions
        n = self.node.worker.concurrency if self.node.worker else None
        n = n or next((k for p in self.plugins if (k := p.workers(self.node))), None) or self.node_count
        if parts and n != len(parts):
            raise PluginError(f"concurrency={n} but the plugins made {len(parts)} partitions; they must agree")
        if self.inline:
            self._share(LocalTransport(SharedState()))
            self._thread_count = n
            start = (self._shared, self._thread_ids, n)
            self._threads = ThreadPoolExecutor(
                n, thread_name_prefix="migpool-worker", initializer=_thread_init, initargs=start
            )
            return
        dynamic = self._dynamic_options()
        if dynamic is not None:
            n = 0  # workers come and go with their partitions
        if self.executor == "thread":  # one process per node, which runs n tasks at once in its threads
            self._threads_per_worker, n = self.worker.concurrency or 1, self.node_count
        specs = self._node_specs(n, parts)
        starting = [s for s in specs if s.node < self.bounds.start]
        self._sched = sched = Scheduler(starting, default_retries=self.retries, spares=spare_settings(self))
        self._share(LocalTransport(sched.shared))
        sched.start()
        for w in sched.workers:
            self.worker_started(w)
        if self.bounds.elastic:
            self._elastic = start_elastic(self, sched, specs)
        if dynamic is not None:
            from .dynamic.site import LocalSite

            self._start_dynamic(dynamic, LocalSite(self.node, dynamic.gpus, self._start_worker, dynamic.lease))
        self._publish()
        if self.metrics_port is not None:
            self._metrics = _serve_metrics(self.provider, lambda: self._sched, self.metrics_port)

    def _share(self, t: Transport) -> None:
        """Serve the pool's collections through `t`; calls outside tasks in this process go to this pool."""
        self._shared = t
        shared.opened(t)

    def _node_specs(self, n: int, parts: list[Partition]) -> list[WorkerSpec]:
        """The specs of `n` workers split over this pool's nodes on this machine (see _split_over_nodes)."""
        specs = _split_over_nodes(self.node_count, n, parts, self.worker_spec)
        if self.node_count > 1:
            self.node.partitions = [s.partition for s in specs if s.partition is not None]
        return specs

    def worker_spec(
        self, i: int, n: int, part: Partition | None, node: int = 0, first: int | None = None, total: int = 0
    ) -> WorkerSpec:
        """The spec of worker `i` of `n` on node `node`, pinned to `part` (its environment fixed before it starts);
        `first`: its index among the pool's `total` workers, where nodes hold different numbers."""
        where = f"node {node} of {self.node_count} on this machine" if self.node_count > 1 else ""
        pool_env = {ONE_TASK_ENV: "1"} if not self.worker.reuse_processes else {}
        if self._threads_per_worker > 1:
            pool_env[THREADS_ENV] = str(self._threads_per_worker)
        return build_worker_spec(
            i,
            n,
            part,
            self._image.env,
            self.plugins,
            node=node,
            node_count=self.node_count,
            first=first,
            total=total,
            inherit=os.environ,
            pool_env=pool_env,
            python=self._python,
            where=where,
            buffer=self.worker.buffer,
            threads=self._threads_per_worker,
        )

    def worker_started(self, w: Slot) -> None:
        """Worker `w` started: the plugins' hook."""
        for p in self.plugins:
            p.worker_started(w.spec, w.pid, self.node)

    def _start_worker(self, part: Partition) -> Slot:
        """One more worker, on a partition dynamic MIG just made here."""
        sched = self.scheduler
        w = sched.add_worker(self.worker_spec(next(self._worker_ids), len(sched.workers) + 1, part))
        self.worker_started(w)
        return w

    def _start_dynamic(self, options: DynamicMigOptions, site: Site) -> None:
        from .dynamic.controller import DynamicMig
        from .dynamic.policy import DynamicPolicy

        policy = options.policy or DynamicPolicy
        self._dynamic = DynamicMig(self.scheduler, site, options.keep_idle, options.run_times, policy=policy)
        self._dynamic.start()

    def _publish(self) -> None:
        sched, name = self.scheduler, self.name
        self._publisher = Publisher(lambda: {**sched.stats(), "name": name})
        self._publisher.start()

    def _open_ray(self) -> None:
        _check_ray_worker(self.worker)
        assert isinstance(self.provider, Ray)
        from .raypool.codec import RayCodec
        from .raypool.elastic import start_ray_elastic
        from .raypool.pool import RayPool
        from .raypool.site import RaySite

        want = self.bounds.max if self.bounds.elastic else self.nodes  # (elastic: every node it may use, prepared)
        self._ray = ray_pool = RayPool(self.provider, self.plugins, self.worker, self._image, want)
        specs = ray_pool.open()
        starting = [s for s in specs if s.node < self.bounds.start] if self.bounds.elastic else specs
        self.node = Node(
            0, len(ray_pool.nodes), self.provider, self.worker, [p for r in ray_pool.nodes for p in r.partitions]
        )
        self.node_count = len(ray_pool.nodes)
        self._sched = sched = Scheduler(starting, default_retries=self.retries, slot=ray_pool.slot, codec=RayCodec())
        self._share(ray_pool.shared)
        sched.start()
        if self.bounds.elastic:
            self._elastic = start_ray_elastic(ray_pool, sched, specs, self.bounds, self.options)
        dynamic = self._dynamic_options()
        if dynamic is not None:
            self._start_dynamic(dynamic, RaySite(ray_pool, sched))
        self._publish()

    def close(self, error: bool = False) -> None:
        """Stop the workers (after their tasks finish, unless `error`) and let plugins tear down. Raises the
        error that broke the pool, if one of its threads died (unless `error`: one is on its way already). A
        close() while another runs (from another thread) waits for that one to end, then returns."""
        with self._closing:
            self._close(error)

    def _close(self, error: bool) -> None:
        broken: PoolBrokenError | None = None
        self._around.close()
        if self._elastic is not None:  # (after the tasks: one sent to a pool at zero nodes starts one)
            if not error and self._sched is not None:
                self._sched.wait_idle()
            self._elastic.stop()
            self._elastic = None
        if self._dynamic is not None:
            if not error and self._sched is not None:
                self._sched.wait_idle()
            try:
                self._dynamic.stop()
            except PoolBrokenError as e:
                broken = e
            self._dynamic = None
        if self._metrics is not None:
            _stop_metrics(*self._metrics)
            self._metrics = None
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._sched is not None:
            if not error:
                self._sched.wait_idle()
            self._sched.shutdown(kill=error)
            broken = broken or self._sched.failure
            self._sched = None
        if self._threads is not None:
            self._threads.shutdown(wait=not error, cancel_futures=error)
            self._threads = None
        chain.finish(self._bootstrapped, self.node)
        self._bootstrapped = []
        if self._ray is not None:
            ray_pool, self._ray = self._ray, None
            ray_pool.close(restore_error=error)
        self.node.close()
        if self._shared is not None:
            shared.closed(self._shared)
            self._shared = None
        self._closed = True
        if broken is not None and not error:
            raise broken

    # --- sending work ---
    def submit(
        self, task: Task[Any] | Callable[..., Any], *args: Any, retries: int | None = None, **kwargs: Any
    ) -> Future[Any]:
        """Run a task (or a function with arguments); returns a concurrent.futures.Future."""
        if not isinstance(task, Task):
            fn = task.fn if isinstance(task, RemoteFunction) else task
            task = Task(fn, args, kwargs)
        if task.timeout is None and self.options.task_run_timeout:  # Options(task_run_timeout=): the default
            task = task.with_timeout(self.options.task_run_timeout)
        if self._decorators:
            task = dataclasses.replace(task, fn=self._decorate(task.fn))
        if self._threads is not None:
            return on_threads(self._threads, task)
        if self._sched is None:
            if self._closed:
                raise RuntimeError("this Compute is closed; open a new one (`with Compute(...) as compute:`)")
            raise RuntimeError(
                "use the Compute as a context manager (`with Compute(...) as compute:`) before sending tasks"
            )
        return self._sched.submit(task, retries=retries)

    def _decorate(self, fn: Any) -> Any:
        """fn wrapped by the plugins' decorators, once per function (the same wrapper travels once)."""
        got = self._decorated.get(id(fn))
        if got is None or got[0] is not fn:
            wrapped = fn
            for d in self._decorators:
                wrapped = d(wrapped)
            got = self._decorated[id(fn)] = (fn, wrapped)
        return got[1]

    def run(self, task: Task[Any]) -> Any:
        """Run a task and return its result (`task >> compute`)."""
        return self.submit(task).result()

    def run_async(self, task: Task[Any]) -> Future[Any]:
        """Send a task; a concurrent.futures.Future of its result (`task > compute`)."""
        return self.submit(task)

    def put(self, value: Any) -> Any:
        """Store `value` once and get a Ref to pass to any number of tasks (alone or inside a list or dict): each
        worker receives the value at most once and keeps it while the Ref lives (a Ray pool keeps it in Ray's
        object store). NumPy arrays arrive read-only, shared by the tasks. A thread pool returns `value` itself."""
        if self._threads is not None:
            return value
        if self._sched is None:
            self.submit(lambda: None)  # the same error as a submit outside the `with` block
        return self.scheduler.put(value)

    def broadcast(self, task: Task[Any]) -> list[Any]:
        """Run the task once on every node (`task @ compute`; an elastic pool's nodes now); one result per node, in
        node order."""
        if self._elastic is None:
            futs = [self.submit(dataclasses.replace(task, node=i)) for i in range(self.node_count)]
        else:
            with self._elastic.steady() as nodes:
                futs = [self.submit(dataclasses.replace(task, node=i)) for i in nodes]
        return [f.result() for f in futs]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
        """fn applied to each item, in parallel: a list of the results in input order (several iterables: fn
        takes one item of each, as the built-in map does)."""
        futs = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]
        return [f.result() for f in self._progress(futs)]

    def run_parallel(self, group: Group) -> list[Any] | Iterator[Any]:
        """Run a group's tasks in parallel (`(a & b) >> compute`, `gather(...) >> compute`): a list of their
        results in task order, or with `stream=True` an iterator of them (`ordered=False`: as they finish)."""
        tasks = group.tasks
        if group.timeout is not None:
            tasks = tuple(t if t.timeout is not None else t.with_timeout(group.timeout) for t in tasks)
        futs = [self.submit(t) for t in tasks]
        if group.stream:
            return (f.result() for f in (futs if group.ordered else as_completed(futs)))
        return [f.result() for f in self._progress(futs)]

    def gather(self, tasks: Sequence[Task[Any]], stream: bool = False, ordered: bool = True) -> Any:
        """`gather(*tasks, stream=..., ordered=...) >> compute`, as a method."""
        return self.run_parallel(Group(tuple(tasks), stream, ordered))

    def _progress(self, futs: list[Future[Any]]) -> list[Future[Any]]:
        if self.progress and len(futs) > 1:
            _show_progress(futs)
        return futs

    # --- where the pool's collections are served (Collections) ---
    def _transport(self) -> Transport:
        if self._shared is None:
            self.submit(lambda: None)  # the error of a pool that is not open
        assert self._shared is not None
        return self._shared


def start_elastic(pool: Compute, sched: Scheduler, specs: list[WorkerSpec]) -> Elastic:
    """Keep `pool`'s node processes between its bounds as its load changes (scheduler/elastic.py)."""
    from .scheduler.elastic import NodeEffect, by_node, elastic_nodes

    if pool.node.partitions:
        raise PluginError(f"{pool.bounds} with plugins that make partitions: elastic nodes run without them")
    effect = NodeEffect(sched, by_node(specs), pool.worker_started)
    return elastic_nodes(sched, effect, specs, pool.bounds, pool.options)


def _check_ray_worker(worker: Worker) -> None:
    """Refuse the Worker settings a Ray pool cannot honour."""
    if not worker.reuse_processes:
        raise PluginError(
            "Worker(reuse_processes=False) on a Ray pool: each worker is an actor that lives as long as the "
            "pool; use a local pool for a fresh process per task"
        )


def _thread_init(where: Transport | None, ids: Iterator[int], n: int) -> None:
    """A thread pool's worker thread starts: its collections and its instance_info."""
    idx = next(ids)
    shared.install_thread(where)
    set_thread_info(
        InstanceInfo(
            worker=idx,
            node=0,
            total_nodes=1,
            workers_per_node=n,
            pid=os.getpid(),
            hostname=socket.gethostname(),
        )
    )


def _stop_metrics(sampler: Any, server: Any) -> None:
    """A pool's exporter stopped: its server, then its sampler and the sampler's backend."""
    server.shutdown()
    sampler.stop()
    sampler.backend.close()


def _serve_metrics(provider: Local | Ray, sched: Callable[[], Scheduler | None], port: int) -> tuple[Any, Any]:
    """Sample this machine's GPUs and the pool (`sched()`: its scheduler while open) and serve the metrics on
    `port`: (the sampler, the server)."""
    from ..backend import open_backend
    from ..observe.exporter import serve
    from ..observe.telemetry import Sampler

    def pools() -> list[dict[str, Any]]:
        s = sched()
        return [s.stats()] if s else []

    sampler = Sampler(open_backend(provider.spec()), pools=pools)
    sampler.start()
    try:
        return sampler, serve(sampler, port)
    except BaseException:
        sampler.stop()
        sampler.backend.close()
        raise


def _split_over_nodes(count: int, n: int, parts: list[Partition], spec: Callable[..., WorkerSpec]) -> list[WorkerSpec]:
    """The specs (made by `spec`) of `n` workers split over `count` nodes on this machine (as evenly as they go, in
    order), each pinned to its partition (which then names its node); the accelerator count per node."""
    if n and n < count:
        raise PluginError(
            f"nodes={count} but only {n} worker(s)"
            + (f" ({len(parts)} partitions)" if parts else "")
            + ": every node needs one; ask for fewer nodes or more partitions"
        )
    base, extra = divmod(n, count)
    specs: list[WorkerSpec] = []
    for k in range(count):
        size = base + (1 if k < extra else 0)
        for j in range(size):
            g = len(specs)
            part = dataclasses.replace(parts[g], node=k) if parts else None
            specs.append(spec(j, size, part, node=k, first=g if count > 1 else None, total=n))
        mine = specs[len(specs) - size :]
        accelerators = len({s.env["CUDA_VISIBLE_DEVICES"] for s in mine if s.env.get("CUDA_VISIBLE_DEVICES")})
        for one in mine:
            one.env["MIGPOOL_ACCELERATORS"] = str(accelerators)
    mark_shared_gpus(specs)
    every = len({s.env["CUDA_VISIBLE_DEVICES"] for s in specs if s.env.get("CUDA_VISIBLE_DEVICES")})
    whole = topology_env(uuid.uuid4().hex[:12], ["127.0.0.1"] * count, _free_port(), every)
    for one in specs:
        one.env.update(whole)
    return specs


def _show_progress(futs: list[Future[Any]]) -> None:
    """A progress bar of the futures as they end (on a terminal)."""
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        t = bar.add_task("tasks", total=len(futs))
        for _ in as_completed(futs):
            bar.advance(t)


def _not_a_task(other: object, op: str) -> str:
    return (
        f"`x {op} pool` takes a task, and {type(other).__name__} is not one: the function ran here and returned it. "
        "Decorate the function with @migpool.function, so that calling it makes a task"
    )
