"""The compute pool: one worker process per MIG partition (or per CPU), with the reference document's API.

Names are imported on first use (the worker process imports only what it needs)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Compute": ".compute",
    "Local": ".providers",
    "Node": ".providers",
    "Ray": ".providers",
    "Verda": ".providers",
    "Worker": ".providers",
    "WorkerSpec": ".providers",
    "Image": ".image",
    "InstanceInfo": ".info",
    "Partition": ".info",
    "instance_info": ".info",
    "Ref": ".refs",
    "RemoteError": ".remote_errors",
    "RemoteTraceback": ".tracebacks",
    "shard": ".shard",
    "Gather": ".task",
    "Group": ".task",
    "RemoteFunction": ".task",
    "Task": ".task",
    "compute": ".task",
    "function": ".task",
    "gather": ".task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'migpool.pool' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .compute import Compute
    from .image import Image
    from .info import InstanceInfo, Partition, instance_info
    from .providers import Local, Node, Ray, Verda, Worker, WorkerSpec
    from .refs import Ref
    from .remote_errors import RemoteError
    from .shard import shard
    from .task import Gather, Group, RemoteFunction, Task, compute, function, gather
    from .tracebacks import RemoteTraceback
