"""The interface migpool needs from a GPU driver: a Backend is its driver control (control.py: the GPUs, their
MIG layout and the guarded calls that change it) and its telemetry (telemetry.py: the readings). The records
both return are re-exported here."""

from __future__ import annotations

from ..mig.instance import GpuRef, MigInstance
from .control import (
    READ_ONLY_ENV,
    ComputeInstanceInfo,
    DriverControl,
    GpuInfo,
    GpuInstanceInfo,
    MigDeviceInfo,
    ProcessInfo,
    read_only,
)
from .telemetry import HEALTH_FIELDS, Activity, Health, Telemetry


class Backend(DriverControl, Telemetry):
    """A GPU driver: both concerns, as NvmlBackend and SimulatedBackend compose them."""

    def memory_used_mib(self, gpu: int) -> int:
        """Memory in use on the whole GPU: by default, what its processes use."""
        return sum(p.used_memory_mib for p in self.processes(gpu))

    def close(self) -> None:
        """Release driver resources."""


__all__ = [
    "HEALTH_FIELDS",
    "READ_ONLY_ENV",
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
    "ProcessInfo",
    "Telemetry",
    "read_only",
]
