"""Where work runs, as data: the providers (`Local`, `Ray`, and the reference API's `Verda`), the `Worker`
settings, the `Node` that plugins bootstrap, a worker's `WorkerSpec`, and what a plugin offers the pool.

This is the lowest layer of the pool: it imports nothing of the pool but `info` (what a task sees).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..backend import SIMULATE_ENV, Backend, open_backend
from ..errors import PluginError
from ..leases import LeaseKey
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
    """This machine. `simulate='A100-80GB'` (or $MIGPOOL_SIMULATE) uses simulated GPUs: never a silent fallback."""

    simulate: str | None = None
    distributed = False  # the pool runs on this one node

    def spec(self) -> str | None:
        return self.simulate or os.environ.get(SIMULATE_ENV) or None


class Verda(Local):
    """The reference API's cloud provider, read as 'this node, provisioned on Verda'. migpool does not
    provision machines: run the script on the node itself (or simulate one)."""


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

    def describe(self) -> str:
        at = f" on {self.where}" if self.where else ""
        if self.partition:
            p = self.partition
            return f"worker {self.index}{at} (partition {p.uuid}, {p.profile} on GPU {p.gpu_index})"
        return f"worker {self.index}{at}"


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

    def transform_image(self, image: Image) -> Image: ...

    def validate(self, node: Node) -> None: ...

    def bootstrap(self, node: Node) -> None: ...

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]: ...

    def worker_started(self, worker: WorkerSpec, pid: int, node: Node) -> None: ...

    def teardown(self, node: Node) -> None: ...

    def rollback(self, node: Node) -> None: ...

    def dynamic_mig(self) -> DynamicMigOptions | None: ...
