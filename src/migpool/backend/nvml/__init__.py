"""The NVML backend, on nvidia-ml-py (`pynvml`): its driver control (control.py) and its telemetry
(telemetry.py), over one NVML session (session.py)."""

from __future__ import annotations

from ..base import Backend
from .control import NvmlControl
from .session import NvmlSession, process_name
from .telemetry import NvmlTelemetry


class NvmlBackend(NvmlControl, NvmlTelemetry, Backend):
    """Real GPUs through NVML. `nvml` may be a stand-in module with pynvml's API (tests use one)."""

    kind = "nvml"


__all__ = ["NvmlBackend", "NvmlControl", "NvmlSession", "NvmlTelemetry", "process_name"]
