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
    **{name: ".providers" for name in ("AWS", "GCP", "Azure", "Container", "Hyperstack", "JarvisLabs")},
    **{name: ".providers" for name in ("LambdaCloud", "MassedCompute", "Novita", "RunPod", "Scaleway")},
    **{name: ".providers" for name in ("TensorDock", "VastAI", "Vultr")},
    "Worker": ".providers",
    "WorkerSpec": ".providers",
    "Image": ".image",
    "InstanceInfo": ".info",
    "Partition": ".info",
    "instance_info": ".info",
    "Ref": ".refs",
    "dict": ".shared",
    "set": ".shared",
    "counter": ".shared",
    "queue": ".shared",
    "barrier": ".shared",
    "lock": ".shared",
    "RemoteError": ".remote_errors",
    "RemoteTraceback": ".tracebacks",
    "shard": ".shard",
    "Checkpoint": ".task",
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
    module = importlib.import_module(mod, __name__)
    value = getattr(module, module.PUBLIC.get(name, name) if mod == ".shared" else name)
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
    from .task import Checkpoint, Gather, Group, RemoteFunction, Task, compute, function, gather
    from .tracebacks import RemoteTraceback
