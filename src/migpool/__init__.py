"""migpool: NVIDIA Multi-Instance GPU made effortless.

    import migpool
    gpu = migpool.catalog.lookup("A100-80GB")
    migpool.plan(gpu, {"3g.40gb": 2})

Names are imported on first use, so a worker process that only needs `migpool.pool.worker` starts fast.
"""

from __future__ import annotations

import importlib

# typing is not imported here: `python -m migpool` and the `migpool` script reach their Ctrl-C guard
# (cli/__init__.py) 20 ms sooner; type checkers read this name as typing's
TYPE_CHECKING = False

__version__ = "0.1.0"

# the reference's control-plane events and views (pool/api/cloud.py: named, refused when used)
_REFUSED_EVENTS = (
    "ComputeCreated ComputeBound ComputeAdopted ComputeProvisioning ComputeReady ComputeDegraded GenerationCreated "
    "GenerationApplied LeaseClaimed LeaseReleased ComputeAbandoned ComputeDeleting ComputeDeletionFailed "
    "StraysTerminated ComputeDeleted CostEvent NodeEvent ProgressEvent ConsoleEvent EmittedEvent PhaseEvent "
    "MetricEvent TaskEvent Event ComputeView NodeView PhaseView TaskView EventCallback"
).split()

_EXPORTS = {
    "catalog": ".catalog",
    "plugins": ".plugins",
    "accelerators": ".accelerators",
    "open_backend": ".backend",
    "NvmlBackend": ".backend",
    "SimulatedBackend": ".backend",
    "Layout": ".mig.layout",
    "MachineLayout": ".mig.layout",
    "PlannedInstance": ".mig.planner",
    "max_addable": ".mig.planner",
    "plan": ".mig.planner",
    "apply": ".reconcile.core",
    "diff": ".reconcile.core",
    "plan_apply": ".reconcile.core",
    "teardown": ".reconcile.core",
    "Checkpoint": ".pool",
    "Compute": ".pool",
    "Image": ".pool",
    "InstanceInfo": ".pool",
    "Local": ".pool",
    "Partition": ".pool",
    "Ref": ".pool",
    "Task": ".pool",
    "Verda": ".pool",
    **{name: ".pool" for name in ("AWS", "GCP", "Azure", "Container", "Hyperstack", "JarvisLabs", "LambdaCloud")},
    **{name: ".pool" for name in ("MassedCompute", "Novita", "RunPod", "Scaleway", "TensorDock", "VastAI", "Vultr")},
    "Worker": ".pool",
    **{name: ".pool" for name in ("Executor", "Nodes", "Options")},
    "compute": ".pool.api.task",  # from where it is made: migpool.pool.compute is also a submodule's name
    "function": ".pool",
    "gather": ".pool",
    "instance_info": ".pool",
    "shard": ".pool",
    "dict": ".pool",
    "set": ".pool",
    "counter": ".pool",
    "queue": ".pool",
    "barrier": ".pool",
    "lock": ".pool",
    "Ray": ".pool",
    "run_command": ".launch.copies",
    "CommandResult": ".launch.copies",
    # the reference system's (Skyward 0.10 and 0.12.1) other names: docs/coming-from-skyward.md
    "Accelerator": ".accelerators",
    "time": ".pool.api",  # its module durations, named as the reference names it
    **{name: ".pool.api.task" for name in ("Group", "Pending", "Streaming", "stream")},
    "PendingFunction": ".pool.api.task",
    "PendingFunctionGroup": ".pool.api.task",
    **{name: ".pool.api.info" for name in ("Info", "is_head")},
    **{name: ".pool.api.attempts" for name in ("Retry", "Lost")},
    **{name: ".pool.api.output" for name in ("silent", "stdout", "stderr", "CallbackWriter", "redirect_output")},
    "emit": ".pool.api.output",
    "sky": ".pool.api.current",
    "PipIndex": ".pool.api.image",
    **{name: ".pool.api.cloud" for name in ("Spec", "Volume", "Storage", "storage", "Port", "DockerImage")},
    **{name: ".pool.api.cloud" for name in ("HealthChecker", "MetricSpec", "metrics", "observability", "app")},
    **{name: ".pool.api.cloud" for name in ("DistributedRegistry", "registry", "Lambda", "Salad", "Provider")},
    **{name: ".pool.api.cloud" for name in ("ComputeState", "NodeState", "TaskState", "Consistency")},
    **{name: ".pool.api.cloud" for name in _REFUSED_EVENTS},
}
_ERRORS = [
    "ApplyError",
    "BackendError",
    "CatalogError",
    "ConfigError",
    "DamagedFileError",
    "ImageError",
    "InUseError",
    "InsufficientResourcesError",
    "LayoutError",
    "LeasedError",
    "LockTimeoutError",
    "MigpoolError",
    "NoPermissionError",
    "NotFoundError",
    "NotSupportedError",
    "PluginError",
    "PoolBrokenError",
    "ProfileError",
    "QueueTimeoutError",
    "ReferenceOnlyError",
    "SkywardError",
    "TaskFailedError",
    "TaskIndeterminateError",
    "ReadOnlyError",
    "RemoteError",
    "ResetRequiredError",
    "TaskExitError",
    "TaskTimeoutError",
    "UnsafeFileError",
    "WorkerLostError",
    "WorkerStartError",
    "EstimateWarning",
]
_EXPORTS.update({name: ".errors" for name in _ERRORS})
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'migpool' has no attribute {name!r}")
    module = importlib.import_module(mod, __name__)
    if name in ("catalog", "plugins", "accelerators"):
        value: Any = module
    elif name == "time":
        value = importlib.import_module(".pool.api.durations", __name__)
    else:
        value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from typing import Any

    from . import accelerators, catalog, plugins
    from .accelerators import Accelerator
    from .backend import NvmlBackend, SimulatedBackend, open_backend
    from .errors import (
        ApplyError,
        BackendError,
        CatalogError,
        ConfigError,
        DamagedFileError,
        EstimateWarning,
        ImageError,
        InsufficientResourcesError,
        InUseError,
        LayoutError,
        LeasedError,
        LockTimeoutError,
        MigpoolError,
        NoPermissionError,
        NotFoundError,
        NotSupportedError,
        PluginError,
        PoolBrokenError,
        ProfileError,
        QueueTimeoutError,
        ReadOnlyError,
        ReferenceOnlyError,
        RemoteError,
        ResetRequiredError,
        SkywardError,
        TaskExitError,
        TaskFailedError,
        TaskIndeterminateError,
        TaskTimeoutError,
        UnsafeFileError,
        WorkerLostError,
        WorkerStartError,
    )
    from .launch.copies import CommandResult, run_command
    from .mig.layout import Layout, MachineLayout
    from .mig.planner import PlannedInstance, max_addable, plan
    from .pool import (
        AWS,
        GCP,
        Azure,
        Checkpoint,
        Compute,
        Container,
        Executor,
        Hyperstack,
        Image,
        InstanceInfo,
        JarvisLabs,
        LambdaCloud,
        Local,
        MassedCompute,
        Nodes,
        Novita,
        Options,
        Partition,
        Ray,
        Ref,
        RunPod,
        Scaleway,
        Task,
        TensorDock,
        VastAI,
        Verda,
        Vultr,
        Worker,
        barrier,
        counter,
        dict,
        function,
        gather,
        instance_info,
        lock,
        queue,
        set,
        shard,
    )
    from .pool.api import durations as time
    from .pool.api.attempts import Lost, Retry
    from .pool.api.cloud import (
        ComputeAbandoned,
        ComputeAdopted,
        ComputeBound,
        ComputeCreated,
        ComputeDegraded,
        ComputeDeleted,
        ComputeDeleting,
        ComputeDeletionFailed,
        ComputeProvisioning,
        ComputeReady,
        ComputeState,
        ComputeView,
        Consistency,
        ConsoleEvent,
        CostEvent,
        DistributedRegistry,
        DockerImage,
        EmittedEvent,
        Event,
        EventCallback,
        GenerationApplied,
        GenerationCreated,
        HealthChecker,
        Lambda,
        LeaseClaimed,
        LeaseReleased,
        MetricEvent,
        MetricSpec,
        NodeEvent,
        NodeState,
        NodeView,
        PhaseEvent,
        PhaseView,
        Port,
        ProgressEvent,
        Provider,
        Salad,
        Spec,
        Storage,
        StraysTerminated,
        TaskEvent,
        TaskState,
        TaskView,
        Volume,
        app,
        metrics,
        observability,
        registry,
        storage,
    )
    from .pool.api.current import sky
    from .pool.api.image import PipIndex
    from .pool.api.info import Info, is_head
    from .pool.api.output import CallbackWriter, emit, redirect_output, silent, stderr, stdout
    from .pool.api.task import (
        Group,
        Pending,
        PendingFunction,
        PendingFunctionGroup,
        Streaming,
        compute,
        stream,
    )
    from .reconcile.core import apply, diff, plan_apply, teardown
