"""migpool: NVIDIA Multi-Instance GPU made effortless.

    import migpool
    gpu = migpool.catalog.lookup("A100-80GB")
    migpool.plan(gpu, {"3g.40gb": 2})
"""

from __future__ import annotations

from . import catalog
from .backend import NvmlBackend, SimulatedBackend, open_backend
from .errors import (
    ApplyError,
    BackendError,
    CatalogError,
    ConfigError,
    ImageError,
    InsufficientResourcesError,
    InUseError,
    LayoutError,
    LockTimeoutError,
    MigpoolError,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    PluginError,
    ProfileError,
    ReadOnlyError,
    ResetRequiredError,
    TaskTimeoutError,
    WorkerLostError,
)
from .layout import Layout, MachineLayout
from .planner import PlannedInstance, max_addable, plan
from .reconcile import apply, diff, plan_apply, teardown

__version__ = "0.1.0"

__all__ = [
    "ApplyError", "BackendError", "CatalogError", "ConfigError", "ImageError", "InUseError",
    "InsufficientResourcesError", "Layout", "LayoutError", "LockTimeoutError", "MachineLayout", "MigpoolError",
    "NoPermissionError", "NotFoundError", "NotSupportedError", "NvmlBackend", "PlannedInstance", "PluginError",
    "ProfileError", "ReadOnlyError", "ResetRequiredError", "SimulatedBackend", "TaskTimeoutError", "WorkerLostError",
    "apply", "catalog", "diff", "max_addable", "open_backend", "plan", "plan_apply", "teardown",
]
