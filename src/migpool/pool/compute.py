"""`Compute`: the pool as users see it. It assembles the layers below: the plugin chain (chain.py) on the node
(providers.py), the scheduler and its worker processes (scheduler.py, worker.py), Ray's nodes and actors
(ray_pool.py), dynamic MIG's controller and policy on its site (dynamic.py, policy.py, site.py), stats and
metrics."""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from types import TracebackType
from typing import Any

from ..accelerators import Accelerator
from ..backend import open_backend
from ..errors import PluginError, PoolBrokenError
from . import chain
from .dynamic import DynamicMig
from .image import Image
from .info import InstanceInfo, Partition, set_thread_info
from .policy import DynamicPolicy
from .providers import DynamicMigOptions, Local, Node, PluginHooks, Ray, Verda, Worker, WorkerSpec, worker_pythonpath
from .ray_pool import RayCodec, RayPool, RaySite
from .scheduler import Scheduler, WorkerProcess
from .site import LocalSite, Site
from .stats import Publisher
from .task import RemoteFunction, Task

__all__ = ["Compute", "Local", "Node", "Ray", "Verda", "Worker"]


class Compute:
    """A pool of workers. Use as a context manager; send tasks with `task >> compute`, `gather(...) >> compute`,
    `compute.submit(task)` or `compute.map(fn, items)`."""

    def __init__(
        self,
        provider: Local | Ray | None = None,
        worker: Worker | None = None,
        image: Image | None = None,
        plugins: Sequence[PluginHooks] = (),
        retries: int = 0,
        progress: bool | None = None,
        nodes: int = 1,
        accelerator: Accelerator | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.provider = provider or Local()
        self.distributed = self.provider.distributed
        if nodes != 1 and not self.distributed:
            raise PluginError(
                f"nodes={nodes}: a Local pool runs on this one node; for several nodes use "
                "provider=migpool.Ray(address=...) (one Ray actor per MIG partition)"
            )
        self.nodes = nodes
        self.accelerator = accelerator
        self.worker = worker or Worker()
        self.image = image or Image()
        self.plugins = list(plugins)
        self.retries = retries
        self.progress = sys.stdout.isatty() if progress is None else progress
        self.node = Node(0, 1, self.provider, self.worker)
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
        self._closed = False

    # --- lifecycle ---
    def __enter__(self) -> Compute:
        try:
            self.open()
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
        if self.accelerator is not None:
            self.accelerator.check([g.name for g in self.node.backend.gpus()])
        chain.validate(self.plugins, self.node)  # every refusal before an image is built or anything changed
        self._python = image.python() if self.worker.executor == "process" else sys.executable
        chain.bootstrap(self.plugins, self.node)
        self._bootstrapped = list(self.plugins)
        n = self.worker.concurrency or len(self.node.partitions) or os.cpu_count() or 1
        if self.node.partitions and n != len(self.node.partitions):
            raise PluginError(
                f"concurrency={n} but the plugins made {len(self.node.partitions)} partitions; they must agree"
            )
        if self.worker.executor == "thread":
            self._threads = ThreadPoolExecutor(
                n, thread_name_prefix="migpool-worker", initializer=self._thread_init, initargs=(n,)
            )
            return
        dynamic = self._dynamic_options()
        if dynamic is not None:
            n = 0  # workers come and go with their partitions
        specs = [self.worker_spec(i, n, self.node.partitions[i] if self.node.partitions else None) for i in range(n)]
        accelerators = len({s.env["CUDA_VISIBLE_DEVICES"] for s in specs if s.env.get("CUDA_VISIBLE_DEVICES")})
        for spec in specs:
            spec.env["MIGPOOL_ACCELERATORS"] = str(accelerators)
        self._sched = sched = Scheduler(specs, default_retries=self.retries)
        sched.start()
        for w in sched.workers:
            self._worker_started(w)
        if dynamic is not None:
            self._start_dynamic(dynamic, LocalSite(self.node, dynamic.gpus, self._start_worker, dynamic.lease))
        self._publish()
        if self.metrics_port is not None:
            self._serve_metrics(self.metrics_port)

    def worker_spec(self, i: int, n: int, part: Partition | None) -> WorkerSpec:
        """The spec of worker `i` of `n` on this node, pinned to `part` (its environment fixed before it starts)."""
        env = dict(
            os.environ,
            **self._image.env,
            PYTHONPATH=worker_pythonpath(),
            MIGPOOL_WORKER_INDEX=str(i),
            MIGPOOL_NODE_INDEX=str(self.node.index),
            MIGPOOL_NODE_COUNT=str(self.node.count),
            MIGPOOL_CONCURRENCY=str(n),
            PYTHONUNBUFFERED="1",
        )
        if part:
            env["MIGPOOL_PARTITION"] = part.to_env()
        spec = WorkerSpec(i, self._python, env, part)
        for p in self.plugins:
            spec.env.update(p.around_process(spec))
        return spec

    def _worker_started(self, w: WorkerProcess) -> None:
        for p in self.plugins:
            p.worker_started(w.spec, w.proc.pid if w.proc else 0, self.node)

    def _start_worker(self, part: Partition) -> WorkerProcess:
        """One more worker, on a partition dynamic MIG just made here."""
        sched = self.scheduler
        w = sched.add_worker(self.worker_spec(next(self._worker_ids), len(sched.workers) + 1, part))
        self._worker_started(w)
        return w

    def _start_dynamic(self, options: DynamicMigOptions, site: Site) -> None:
        policy = options.policy or DynamicPolicy
        self._dynamic = DynamicMig(self.scheduler, site, options.keep_idle, options.run_times, policy=policy)
        self._dynamic.start()

    def _publish(self) -> None:
        self._publisher = Publisher(self.scheduler.stats)
        self._publisher.start()

    def _serve_metrics(self, port: int) -> None:
        from ..exporter import serve
        from ..telemetry import Sampler

        sched = self._sched
        sampler = Sampler(open_backend(self.provider.spec()), pools=lambda: [sched.stats()] if sched else [])
        sampler.start()
        try:
            self._metrics = (sampler, serve(sampler, port))
        except BaseException:
            sampler.stop()
            sampler.backend.close()
            raise

    def _open_ray(self) -> None:
        if self.worker.executor != "process":
            raise PluginError("a Ray pool runs process workers (Ray actors): use Worker(executor='process')")
        assert isinstance(self.provider, Ray)
        self._ray = ray_pool = RayPool(self.provider, self.plugins, self.worker, self._image, self.nodes)
        specs = ray_pool.open()
        self.node = Node(
            0, len(ray_pool.nodes), self.provider, self.worker, [p for r in ray_pool.nodes for p in r.partitions]
        )
        self._sched = sched = Scheduler(specs, default_retries=self.retries, slot=ray_pool.slot, codec=RayCodec())
        sched.start()
        dynamic = self._dynamic_options()
        if dynamic is not None:
            self._start_dynamic(dynamic, RaySite(ray_pool, sched))
        self._publish()

    def _thread_init(self, n: int) -> None:
        idx = next(self._thread_ids)
        set_thread_info(
            InstanceInfo(
                worker=idx,
                node=self.node.index,
                total_nodes=self.node.count,
                workers_per_node=n,
                pid=os.getpid(),
                hostname=socket.gethostname(),
            )
        )

    def close(self, error: bool = False) -> None:
        """Stop the workers (after their tasks finish, unless `error`) and let plugins tear down. Raises the
        error that broke the pool, if one of its threads died (unless `error`: one is on its way already)."""
        broken: PoolBrokenError | None = None
        if self._dynamic is not None:
            if not error and self._sched is not None:
                self._sched.wait_idle()
            try:
                self._dynamic.stop()
            except PoolBrokenError as e:
                broken = e
            self._dynamic = None
        if self._metrics is not None:
            sampler, server = self._metrics
            server.shutdown()
            sampler.stop()
            sampler.backend.close()
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
        if self._threads is not None:
            return self._threads.submit(task.fn, *task.args, **task.kwargs)
        if self._sched is None:
            if self._closed:
                raise RuntimeError("this Compute is closed; open a new one (`with Compute(...) as compute:`)")
            raise RuntimeError(
                "use the Compute as a context manager (`with Compute(...) as compute:`) before sending tasks"
            )
        return self._sched.submit(task, retries=retries)

    def run(self, task: Task[Any]) -> Any:
        return self.submit(task).result()

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
        """Run the task once on every node (`task @ compute`); one result per node, in node order."""
        futs = [self.submit(dataclasses.replace(task, node=i)) for i in range(self.node.count)]
        return [f.result() for f in futs]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """Like concurrent.futures' map: results in input order."""
        futs = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]
        return (f.result() for f in futs)

    def gather(self, tasks: Sequence[Task[Any]], stream: bool = False) -> list[Any] | Iterator[Any]:
        futs = [self.submit(t) for t in tasks]
        if stream:
            return self._stream(futs)
        return [f.result() for f in self._progress(futs)]

    def _stream(self, futs: list[Future[Any]]) -> Iterator[Any]:
        for f in as_completed(futs):
            yield f.result()

    def _progress(self, futs: list[Future[Any]]) -> list[Future[Any]]:
        if not self.progress or len(futs) < 2:
            return futs
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            t = bar.add_task("tasks", total=len(futs))
            for _ in as_completed(futs):
                bar.advance(t)
        return futs

    def stats(self) -> dict[str, Any]:
        """Per worker: partition, tasks started/done/failed/lost, running and queued now, busy time, last error."""
        if self._sched is None:
            return dict(pid=os.getpid(), pending=0, workers=[])
        return self._sched.stats()

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
