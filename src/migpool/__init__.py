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
    value = module if name in ("catalog", "plugins", "accelerators") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from typing import Any

    from . import accelerators, catalog, plugins
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
        ReadOnlyError,
        RemoteError,
        ResetRequiredError,
        TaskExitError,
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
    from .pool.api.task import compute
    from .reconcile.core import apply, diff, plan_apply, teardown
