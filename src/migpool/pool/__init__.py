"""The compute pool: one worker process per MIG partition (or per CPU), with the reference document's API.

Names are imported on first use (the worker process imports only what it needs)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Compute": ".compute",
    "Local": ".api.providers",
    "Node": ".api.providers",
    "Ray": ".api.providers",
    "Verda": ".api.providers",
    **{name: ".api.providers" for name in ("AWS", "GCP", "Azure", "Container", "Hyperstack", "JarvisLabs")},
    **{name: ".api.providers" for name in ("LambdaCloud", "MassedCompute", "Novita", "RunPod", "Scaleway")},
    **{name: ".api.providers" for name in ("TensorDock", "VastAI", "Vultr")},
    "Worker": ".api.providers",
    "Executor": ".api.providers",
    "Nodes": ".api.nodes",
    "Options": ".api.nodes",
    "WorkerSpec": ".api.providers",
    "Image": ".api.image",
    "InstanceInfo": ".api.info",
    "Partition": ".api.info",
    "instance_info": ".api.info",
    "Ref": ".api.refs",
    "Info": ".api.info",
    "is_head": ".api.info",
    "Pending": ".api.task",
    "Streaming": ".api.task",
    "stream": ".api.task",
    "Retry": ".api.attempts",
    "Lost": ".api.attempts",
    "dict": ".shared.proxies",
    "set": ".shared.proxies",
    "counter": ".shared.proxies",
    "queue": ".shared.proxies",
    "barrier": ".shared.proxies",
    "lock": ".shared.proxies",
    "RemoteError": ".wire.remote_errors",
    "RemoteTraceback": ".wire.tracebacks",
    "shard": ".api.shard",
    "Checkpoint": ".api.task",
    "Gather": ".api.task",
    "Group": ".api.task",
    "RemoteFunction": ".api.task",
    "Task": ".api.task",
    "compute": ".api.task",
    "function": ".api.task",
    "gather": ".api.task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'migpool.pool' has no attribute {name!r}")
    module = importlib.import_module(mod, __name__)
    value = getattr(module, module.PUBLIC.get(name, name) if mod == ".shared.proxies" else name)
    globals()[name] = value
    if isinstance(globals().get("compute"), ModuleType):
        # Importing the submodule compute.py (Compute's) bound the name `compute` here to that module; the name
        # exported is the task decorator (api/task.py): the binding goes, and the next use imports the decorator.
        del globals()["compute"]
    return value


if TYPE_CHECKING:
    from .api.attempts import Lost, Retry
    from .api.image import Image
    from .api.info import Info, InstanceInfo, Partition, instance_info, is_head
    from .api.nodes import Nodes, Options
    from .api.providers import (
        AWS,
        GCP,
        Azure,
        Container,
        Executor,
        Hyperstack,
        JarvisLabs,
        LambdaCloud,
        Local,
        MassedCompute,
        Node,
        Novita,
        Ray,
        RunPod,
        Scaleway,
        TensorDock,
        VastAI,
        Verda,
        Vultr,
        Worker,
        WorkerSpec,
    )
    from .api.refs import Ref
    from .api.shard import shard
    from .api.task import (
        Checkpoint,
        Gather,
        Group,
        Pending,
        RemoteFunction,
        Streaming,
        Task,
        compute,
        function,
        gather,
        stream,
    )
    from .compute import Compute
    from .shared.proxies import barrier, counter, lock, queue
    from .shared.proxies import shared_dict as dict
    from .shared.proxies import shared_set as set
    from .wire.remote_errors import RemoteError
    from .wire.tracebacks import RemoteTraceback
