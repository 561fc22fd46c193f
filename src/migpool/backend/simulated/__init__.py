"""A simulated MIG driver for any catalog GPU, with the real driver's rules and errors: its driver control
(control.py) and telemetry (telemetry.py) over one simulated machine's state file (state.py)."""

from __future__ import annotations

from ..base import Backend
from .control import (
    HARDWARE_LATENCY,
    LATENCY_ENV,
    SIMULATED_DRIVER,
    SimulatedControl,
    gi_id_for,
    parse_latency,
)
from .state import MAX_GPUS, STATE_DIR_ENV, SimulatedMachine, parse_spec, state_dir
from .telemetry import SimulatedTelemetry


class SimulatedBackend(SimulatedControl, SimulatedTelemetry, Backend):
    """Simulated GPUs with the driver's semantics. `spec` as for `--simulate` (e.g. 'H100-80GB:2')."""

    kind = "simulated"

    def __repr__(self) -> str:
        return f"SimulatedBackend({self.spec!r}, state={str(self.path)!r})"


__all__ = [
    "HARDWARE_LATENCY",
    "LATENCY_ENV",
    "MAX_GPUS",
    "SIMULATED_DRIVER",
    "STATE_DIR_ENV",
    "SimulatedBackend",
    "SimulatedControl",
    "SimulatedMachine",
    "SimulatedTelemetry",
    "gi_id_for",
    "parse_latency",
    "parse_spec",
    "state_dir",
]
