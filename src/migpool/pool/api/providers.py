"""Where work runs, as data: the providers (`Local`, `Ray`, and the reference API's `Verda`), the `Worker`
settings (and `Executor`, their 0.11+ spelling), the `Node` that plugins bootstrap, a worker's `WorkerSpec`, and
what a plugin offers the pool.

This is the lowest layer of the pool: it imports nothing of the pool but `info` (what a task sees).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ...backend import SIMULATE_ENV, Backend, open_backend
from ...errors import PluginError
from ...host.leases import LeaseKey
from .info import Partition

if TYPE_CHECKING:
    from .image import Image


def user_paths() -> list[str]:
    """The parent's import paths that are its own code (script dir, cwd, source trees), not the stdlib or
    installed packages, so functions defined in the user's modules import in the workers too."""
    skip = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    out: list[str] = []
    for p in sys.path:
        p = p or os.getcwd()
        if not os.path.isdir(p) or p in out or any(p.startswith(s) for s in skip):
            continue
        if "site-packages" in p or "dist-packages" in p or p.endswith(".zip"):
            continue
        out.append(p)
    return out


def worker_pythonpath() -> str:
    """PYTHONPATH for a worker: the parent's own code first, then the parent's PYTHONPATH."""
    inherited = [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
    return os.pathsep.join(user_paths() + inherited)


@dataclass(frozen=True)
class Local:
    """This machine. `simulate='A100-80GB'` (or $MIGPOOL_SIMULATE) uses simulated GPUs: never a silent fallback.

    `inline=True` is the one fast path that gives up the reference's task semantics: a thread executor's tasks run
    in threads of the caller itself, sharing its objects (arguments and results are not copied) and its
    environment (an Image's env and pip do not apply). Without it every task runs in a node process."""

    simulate: str | None = None
    inline: bool = False
    distributed = False  # the pool runs on this one node

    def spec(self) -> str | None:
        return self.simulate or os.environ.get(SIMULATE_ENV) or None


class Verda(Local):
    """The reference API's cloud provider, read as 'this node, provisioned on Verda'. migpool does not
    provision machines: run the script on the node itself (or simulate one)."""


class Cloud:
    """A provider of the reference system that provisions machines (`AWS()`, `GCP()`, …). migpool provisions none
    itself: each such provider can be named, with any options, and a pool given one refuses with what to do."""

    cloud = ""
    distributed = False

    def __init__(self, *args: Any, **options: Any) -> None:
        self.options = options

    def refusal(self) -> str:
        name = type(self).__name__
        return (
            f"provider={name}(): migpool provisions no machines itself. Start a Ray cluster on {self.cloud} "
            "(the ray up configs in deploy/ray/ and the KubeRay manifest in deploy/kuberay/ install migpool and "
            "apply a MIG layout at boot) and use provider=migpool.Ray(address='auto') on its head node"
        )

    def spec(self) -> str | None:
        return None


def _cloud(name: str, where: str) -> type[Cloud]:
    return type(name, (Cloud,), {"cloud": where, "__doc__": f"The reference system's {where} provider (refuses)."})


AWS = _cloud("AWS", "AWS")
GCP = _cloud("GCP", "Google Cloud")
Azure = _cloud("Azure", "Azure")
Hyperstack = _cloud("Hyperstack", "Hyperstack")
JarvisLabs = _cloud("JarvisLabs", "JarvisLabs")
LambdaCloud = _cloud("LambdaCloud", "Lambda Cloud")
MassedCompute = _cloud("MassedCompute", "Massed Compute")
Novita = _cloud("Novita", "Novita")
RunPod = _cloud("RunPod", "RunPod")
Scaleway = _cloud("Scaleway", "Scaleway")
TensorDock = _cloud("TensorDock", "TensorDock")
VastAI = _cloud("VastAI", "Vast.ai")
Vultr = _cloud("Vultr", "Vultr")


class Container(Cloud):
    """The reference system's local container provider (refuses: migpool starts no containers)."""

    def refusal(self) -> str:
        return (
            "provider=Container(): migpool starts no containers. provider=migpool.Local() with nodes=N runs N "
            "nodes on this machine (each with its own workers and node index), with no container runtime"
        )


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

    def __post_init__(self) -> None:
        if importlib.util.find_spec("ray") is None:
            raise PluginError("sky.Ray() needs Ray, which is not installed here: pip install 'migpool[ray]'")

    def spec(self) -> str | None:
        return None  # each node reads its own GPUs (or its own MIGPOOL_SIMULATE)


@dataclass(frozen=True)
class Worker:
    """How each node runs its tasks, with the reference system's 0.10 fields and defaults (`Executor` is the
    0.11+ spelling of the same settings).

    concurrency      tasks at once per node (None: one per partition or GPU that the plugins pin workers to,
                     else 1, the reference's default)
    buffer           tasks queued at each worker beyond those it runs (migpool keeps the next task ready by
                     itself; this raises that to at least `buffer`)
    executor         "auto" (the default): "process" where plugins pin workers to partitions or GPUs (a process
                     sees the devices it was started with), else "thread", as in the reference; or either, named.
                     "thread": one process per node runs `concurrency` tasks at once in its threads; "process":
                     `concurrency` worker processes per node (on a Ray pool both are actor processes)
    reuse_processes  False: a fresh worker process for every task (executor="process" only)
    preload          modules each worker process imports as it starts
    """

    concurrency: int | None = None
    buffer: int = 0
    executor: Literal["auto", "process", "thread"] = "auto"
    reuse_processes: bool = True
    preload: Sequence[str] = ()  # modules each worker process imports as it starts

    def __post_init__(self) -> None:
        if self.executor not in ("auto", "process", "thread"):
            raise PluginError(f"executor must be 'auto', 'process' or 'thread', not {self.executor!r}")
        _check_counts(self.concurrency, self.buffer)
        if not self.reuse_processes and self.executor != "process":
            raise PluginError("reuse_processes=False only applies when executor='process'")
        _check_preload(self.preload)

    def resolved(self, pinned: bool) -> Literal["process", "thread"]:
        """The executor "auto" stands for: processes where workers are pinned to devices, else threads."""
        if self.executor == "auto":
            return "process" if pinned else "thread"
        return self.executor


def _check_counts(concurrency: int | None, buffer: int) -> None:
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise PluginError(f"concurrency must be a whole number >= 1 (or None), not {concurrency!r}")
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 0:
        raise PluginError(f"buffer must be a whole number >= 0, not {buffer!r}")


def _check_preload(preload: Sequence[str]) -> None:
    if isinstance(preload, str) or not all(isinstance(m, str) and m for m in preload):
        raise PluginError(f"preload takes a list of module names, such as ('numpy',), not {preload!r}")


@dataclass(frozen=True)
class Executor:
    """How each node runs its tasks: the reference's 0.11+ spelling of `Worker`, with its fields and defaults.

    type         "thread" (the default): one process per node runs `concurrency` tasks at once in its threads;
                 "process": `concurrency` worker processes per node; "loky": as "process" (migpool's worker
                 processes already live across tasks, as loky's do)
    reuse        False: a fresh process for every task (type="process" only, as in the reference)
    concurrency  tasks at once per node (None: 1, as in the reference; with plugins that pin workers to
                 partitions or GPUs, one per partition or GPU)
    buffer       tasks queued at each worker beyond those it runs
    preload      modules each worker process imports as it starts

    Whatever the type, a task runs in a node process: its arguments and result are copies, and the Image's env
    and pip apply (`Local(inline=True)` is the exception, for threads in the caller).
    """

    type: Literal["thread", "process", "loky"] = "thread"
    reuse: bool = True
    concurrency: int | None = None
    buffer: int = 0
    preload: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.type not in ("thread", "process", "loky"):
            raise PluginError(f"Executor type must be 'thread', 'process' or 'loky', not {self.type!r}")
        _check_counts(self.concurrency, self.buffer)
        if not self.reuse and self.type != "process":
            raise PluginError(f"Executor(reuse=False) needs type='process' (a process per task), not {self.type!r}")
        _check_preload(self.preload)

    def worker(self) -> Worker:
        """The same settings as a `Worker` (the one implementation behind both spellings)."""
        return Worker(
            concurrency=self.concurrency,
            buffer=self.buffer,
            executor="thread" if self.type == "thread" else "process",
            reuse_processes=self.reuse,
            preload=tuple(self.preload),
        )


@dataclass
class Node:
    """What plugins see while bootstrapping: this node, its GPUs and the partitions they assign. Its backend is
    opened on first use and closed by `close()`."""

    index: int
    count: int
    provider: Local | Ray
    worker: Worker | None
    partitions: list[Partition] = field(default_factory=list)
    _backend: Backend | None = field(default=None, init=False, repr=False)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = open_backend(self.provider.spec())
        return self._backend

    @property
    def simulated(self) -> bool:
        return self.provider.spec() is not None

    def close(self) -> None:
        """Close the backend if it was opened (a later use opens it again)."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None


@dataclass
class WorkerSpec:
    """One worker: its index on its node, interpreter, environment (fixed before it starts) and partition."""

    index: int  # on its node
    python: str
    env: dict[str, str]
    partition: Partition | None = None
    node: int = 0
    where: str = ""  # the node, where there are several: "node 1 (10.0.0.7, 3fa2…)"
    buffer: int = 0  # Worker(buffer=...): tasks kept queued at this worker beyond the one it runs, at least
    threads: int = 1  # tasks it runs at once, each in a thread of its own (the thread executor)

    def describe(self) -> str:
        at = f" on {self.where}" if self.where else ""
        if self.partition:
            p = self.partition
            return f"worker {self.index}{at} (partition {p.uuid}, {p.profile} on GPU {p.gpu_index})"
        return f"worker {self.index}{at}"


def build_worker_spec(
    index: int,
    concurrency: int,
    partition: Partition | None,
    image_env: Mapping[str, str],
    plugins: Sequence[PluginHooks],
    *,
    node: int = 0,
    node_count: int = 1,
    first: int | None = None,
    total: int = 0,
    inherit: Mapping[str, str] | None = None,
    pool_env: Mapping[str, str] | None = None,
    python: str = "",
    where: str = "",
    buffer: int = 0,
    threads: int = 1,
) -> WorkerSpec:
    """Worker `index` of `concurrency` on node `node` (of `node_count`), pinned to `partition`: the one place a
    worker's environment is made, for a local process and a Ray actor alike, fixed before it starts. `threads`:
    tasks it runs at once in threads of its own (the thread executor).

    Later layers win: `inherit` (a local worker starts from this process's environment), migpool's defaults
    (PYTHONUNBUFFERED=1), the Image's env (which may name any variable, PYTHONPATH included: it comes after
    migpool's paths), then what migpool must pin: the MIGPOOL_* variables (the worker's place in the pool: `first`
    is its index among the pool's `total` workers where nodes hold different numbers), `pool_env` (what the pool
    adds: a Ray pool's topology and collections' actor, a process per task), its partition, and last what each
    plugin's around_process adds (the mig and gpus plugins: CUDA_VISIBLE_DEVICES, the device it is pinned to)."""
    env = dict(inherit or {})
    env["PYTHONUNBUFFERED"] = "1"
    env.update(image_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (worker_pythonpath(), image_env.get("PYTHONPATH", "")) if p)
    env.update(
        MIGPOOL_WORKER_INDEX=str(index),
        MIGPOOL_NODE_INDEX=str(node),
        MIGPOOL_NODE_COUNT=str(node_count),
        MIGPOOL_CONCURRENCY=str(concurrency),
    )
    if first is not None:
        env.update(MIGPOOL_GLOBAL_WORKER_INDEX=str(first), MIGPOOL_TOTAL_WORKERS=str(total))
    env.update(pool_env or {})
    if partition:
        env["MIGPOOL_PARTITION"] = partition.to_env()
    spec = WorkerSpec(index, python, env, partition, node=node, where=where, buffer=buffer, threads=threads)
    for p in plugins:
        spec.env.update(p.around_process(spec))
    return spec


SHARED_GPU_ENV = "MIGPOOL_SHARED_GPU"  # "1" in a worker whose partition's GPU has another worker of this machine


def mark_shared_gpus(specs: list[WorkerSpec]) -> None:
    """Tell each worker whether another worker of the same machine runs on a MIG instance of its GPU (what NCCL
    cannot tell apart: pool/distributed.py)."""
    per_gpu: dict[str, int] = {}
    for s in specs:
        if s.partition is not None:
            per_gpu[s.partition.gpu_uuid] = per_gpu.get(s.partition.gpu_uuid, 0) + 1
    for s in specs:
        shared = s.partition is not None and per_gpu[s.partition.gpu_uuid] > 1
        s.env[SHARED_GPU_ENV] = "1" if shared else "0"


@dataclass(frozen=True)
class DynamicMigOptions:
    """What a plugin asks of dynamic MIG (`mig(dynamic=True)`): the GPUs it may change on its node, how long an
    idle partition is kept, and the file of learned run times (None: start from nothing, keep nothing)."""

    gpus: tuple[int, ...]
    keep_idle: float
    run_times: Path | None
    # a policy class to use instead of dynamic MIG's own (a subclass of policy.DynamicPolicy); benchmarks/dynamic.py
    # compares other strategies through it
    policy: Any = None
    lease: LeaseKey | None = None  # whose leases the partitions it makes are (the plugin's)


class PluginHooks(Protocol):
    """The hooks the pool calls on a plugin (`migpool.plugins.Plugin` implements all of them as no-ops)."""

    needs_mig: bool  # only nodes with a MIG-capable GPU will do
    needs_processes: bool  # each worker is a process of its own (its devices, its rank): executor "auto" = processes

    decorates: bool  # decorate() wraps each task's function

    def workers(self, node: Node) -> int | None: ...

    def decorate(self, fn: Any) -> Any: ...

    def around_pool(self, pool: Any) -> Any: ...

    def transform_image(self, image: Image) -> Image: ...

    def validate(self, node: Node) -> None: ...

    def bootstrap(self, node: Node) -> None: ...

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]: ...

    def worker_started(self, worker: WorkerSpec, pid: int, node: Node) -> None: ...

    def teardown(self, node: Node) -> None: ...

    def rollback(self, node: Node) -> None: ...

    def dynamic_mig(self) -> DynamicMigOptions | None: ...
