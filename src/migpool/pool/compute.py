"""`Compute`: a pool of worker processes on this node, bootstrapped by plugins (e.g. `plugins.mig`)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from ..accelerators import Accelerator
from ..backend import SIMULATE_ENV, Backend, open_backend
from ..errors import PluginError
from .image import Image
from .info import InstanceInfo, Partition, set_thread_info
from .scheduler import Scheduler, WorkerSpec
from .stats import Publisher
from .task import RemoteFunction, Task


def _user_paths() -> list[str]:
    """The parent's import paths that are its own code (script dir, cwd, source trees), not the stdlib or
    installed packages, so functions defined in the user's modules import in the workers too."""
    skip = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    out = []
    for p in sys.path:
        p = p or os.getcwd()
        if not os.path.isdir(p) or p in out or any(p.startswith(s) for s in skip):
            continue
        if "site-packages" in p or "dist-packages" in p or p.endswith(".zip"):
            continue
        out.append(p)
    return out


@dataclass(frozen=True)
class Local:
    """This machine. `simulate='A100-80GB'` (or $MIGPOOL_SIMULATE) uses simulated GPUs: never a silent fallback."""

    simulate: str | None = None

    def spec(self) -> str | None:
        return self.simulate or os.environ.get(SIMULATE_ENV) or None


class Verda(Local):
    """The reference API's cloud provider, read as 'this node, provisioned on Verda'. migpool does not
    provision machines: run the script on the node itself (or simulate one)."""


@dataclass(frozen=True)
class Worker:
    """`concurrency` workers per node (None: one per partition, or one per CPU without partitions)."""

    concurrency: int | None = None
    executor: Literal["process", "thread"] = "process"

    def __post_init__(self) -> None:
        if self.executor not in ("process", "thread"):
            raise PluginError(f"executor must be 'process' or 'thread', not {self.executor!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise PluginError(f"concurrency must be at least 1, not {self.concurrency}")


@dataclass
class Node:
    """What plugins see while bootstrapping: this node, its GPUs and the partitions they assign."""

    index: int
    count: int
    provider: Local
    worker: Worker
    partitions: list[Partition] = field(default_factory=list)
    _backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = open_backend(self.provider.spec())
        return self._backend

    @property
    def simulated(self) -> bool:
        return self.provider.spec() is not None


class Compute:
    """A pool of workers. Use as a context manager; send tasks with `task >> compute`, `gather(...) >> compute`,
    `compute.submit(task)` or `compute.map(fn, items)`."""

    def __init__(
        self,
        provider: Local | None = None,
        worker: Worker | None = None,
        image: Image | None = None,
        plugins: Sequence[Any] = (),
        retries: int = 0,
        progress: bool | None = None,
        nodes: int = 1,
        accelerator: Accelerator | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.provider = provider or Local()
        self.distributed = bool(getattr(self.provider, "distributed", False))
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
        self._bootstrapped: list[Any] = []
        self._thread_ids = itertools.count()
        self.metrics_port = metrics_port
        self._publisher: Any = None
        self._metrics: Any = None  # (sampler, server) while metrics are served
        self._ray: Any = None
        self._dynamic: Any = None  # the dynamic MIG controller, with mig(dynamic=True)

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

    def open(self) -> None:
        image = self.image
        for p in self.plugins:
            image = p.transform_image(image)
        if self.distributed:
            return self._open_ray()
        if self.accelerator is not None:
            self.accelerator.check([g.name for g in self.node.backend.gpus()])
        for p in self.plugins:
            p.validate(self.node)
        python = image.python() if self.worker.executor == "process" else sys.executable
        for p in self.plugins:
            p.bootstrap(self.node)
            self._bootstrapped.append(p)
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
        self._python, self._image = python, image
        dynamic = next((p for p in self.plugins if getattr(p, "dynamic", False)), None)
        if dynamic is not None:
            n = 0  # workers come and go with their partitions
        specs = [self.worker_spec(i, n, self.node.partitions[i] if self.node.partitions else None) for i in range(n)]
        accelerators = len({s.env["CUDA_VISIBLE_DEVICES"] for s in specs if s.env.get("CUDA_VISIBLE_DEVICES")})
        for spec in specs:
            spec.env["MIGPOOL_ACCELERATORS"] = str(accelerators)
        self._sched = Scheduler(specs, default_retries=self.retries)
        self._sched.start()
        for w in self._sched.workers:
            self.worker_started(w)
        if dynamic is not None:
            self._dynamic = dynamic.controller(self)
        self._publisher = Publisher(self._sched.stats)
        self._publisher.start()
        if self.metrics_port is not None:
            self._serve_metrics(self.metrics_port)

    def worker_spec(self, i: int, n: int, part: Partition | None) -> WorkerSpec:
        """The spec of worker `i` of `n` on this node, pinned to `part` (its environment fixed before it starts)."""
        pythonpath = os.pathsep.join(
            _user_paths() + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
        )
        env = dict(
            os.environ,
            **self._image.env,
            PYTHONPATH=pythonpath,
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

    def worker_started(self, w: Any) -> None:
        for p in self.plugins:
            p.worker_started(w.spec, w.proc.pid if w.proc else 0, self.node)

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
        from .ray_pool import RayPool

        if self.worker.executor != "process":
            raise PluginError("a Ray pool runs process workers (Ray actors): use Worker(executor='process')")
        self._ray = RayPool(self)
        specs = self._ray.open()
        self.node = Node(
            0, len(self._ray.nodes), self.provider, self.worker, [p for r in self._ray.nodes for p in r.partitions]
        )
        self._sched = Scheduler(specs, default_retries=self.retries, slot=self._ray.slot)
        self._sched.start()
        dynamic = next((p for p in self.plugins if getattr(p, "dynamic", False)), None)
        if dynamic is not None:
            from .dynamic import DynamicMig
            from .ray_pool import RaySite

            self._dynamic = DynamicMig(self, RaySite(self._ray), dynamic.keep_idle, dynamic.run_times_file())
        self._publisher = Publisher(self._sched.stats)
        self._publisher.start()

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
        """Stop the workers (after their tasks finish, unless `error`) and let plugins tear down."""
        if self._dynamic is not None and not error and self._sched is not None:
            self._sched.wait_idle()
        if self._dynamic is not None:
            self._dynamic.stop()
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
            self._sched = None
        if self._threads is not None:
            self._threads.shutdown(wait=not error, cancel_futures=error)
            self._threads = None
        for p in reversed(self._bootstrapped):
            p.teardown(self.node)
        self._bootstrapped = []
        if self._ray is not None:
            ray_pool, self._ray = self._ray, None
            ray_pool.close(restore_error=error)
        if self.node._backend is not None:
            self.node._backend.close()
            self.node._backend = None

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
            raise RuntimeError(
                "use the Compute as a context manager (`with Compute(...) as compute:`) before sending tasks"
            )
        return self._sched.submit(task, retries=retries)

    def run(self, task: Task[Any]) -> Any:
        return self.submit(task).result()

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
