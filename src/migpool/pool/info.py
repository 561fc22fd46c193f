"""What a task can learn about where it runs: `migpool.instance_info()`."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Partition:
    """A MIG partition a worker is pinned to."""

    uuid: str
    profile: str
    gpu_index: int
    gpu_uuid: str
    memory_mib: int
    gi_id: int = 0
    ci_id: int = 0

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> Partition:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class InstanceInfo:
    """`worker` is the worker index (None outside a worker); `partition` is set for MIG workers."""

    worker: int | None
    node: int
    nodes: int
    concurrency: int
    partition: Partition | None = None
    pid: int = 0

    @property
    def total_workers(self) -> int:
        return self.nodes * self.concurrency


_thread = threading.local()


def instance_info() -> InstanceInfo:
    """Where the calling task runs: worker index, node index and count, concurrency, MIG partition."""
    local = getattr(_thread, "info", None)
    if local is not None:
        return local
    env = os.environ
    part = env.get("MIGPOOL_PARTITION")
    worker = env.get("MIGPOOL_WORKER_INDEX")
    return InstanceInfo(
        worker=int(worker) if worker is not None else None,
        node=int(env.get("MIGPOOL_NODE_INDEX", "0")),
        nodes=int(env.get("MIGPOOL_NODE_COUNT", "1")),
        concurrency=int(env.get("MIGPOOL_CONCURRENCY", "1")),
        partition=Partition.from_env(part) if part else None,
        pid=os.getpid(),
    )


def set_thread_info(info: InstanceInfo | None) -> None:
    _thread.info = info
