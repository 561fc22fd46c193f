"""Backends: the NVML one for real GPUs and the simulated one, each its driver control and its telemetry (base.py);
`open_backend` picks by setting."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .base import (
    Activity,
    Backend,
    ComputeInstanceInfo,
    DriverControl,
    GpuInfo,
    GpuInstanceInfo,
    GpuRef,
    Health,
    MigDeviceInfo,
    MigInstance,
    ProcessInfo,
    Telemetry,
    read_only,
)
from .simulated import SimulatedBackend

SIMULATE_ENV = "MIGPOOL_SIMULATE"


def open_backend(simulate: str | None = None) -> Backend:
    """The simulated backend when `simulate` or $MIGPOOL_SIMULATE names GPUs, else NVML. Never a silent fallback."""
    spec = simulate or os.environ.get(SIMULATE_ENV)
    if spec:
        return SimulatedBackend(spec)
    from .nvml import NvmlBackend

    return NvmlBackend()


def __getattr__(name: str) -> object:
    """NvmlBackend, imported on first use."""
    if name == "NvmlBackend":
        from .nvml import NvmlBackend

        return NvmlBackend
    raise AttributeError(name)


if TYPE_CHECKING:
    from .nvml import NvmlBackend


__all__ = [
    "Activity",
    "Backend",
    "ComputeInstanceInfo",
    "DriverControl",
    "GpuInfo",
    "GpuInstanceInfo",
    "GpuRef",
    "Health",
    "MigDeviceInfo",
    "MigInstance",
    "NvmlBackend",
    "ProcessInfo",
    "SimulatedBackend",
    "SIMULATE_ENV",
    "Telemetry",
    "open_backend",
    "read_only",
]
