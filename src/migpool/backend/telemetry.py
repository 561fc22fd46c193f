"""Telemetry, the other of a backend's two concerns: how busy a GPU is (activity), its memory in use, its
temperatures, power, clocks, PCIe and NVLink counters (health), and the XID errors it reports. Nothing here
changes a GPU."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import NotSupportedError


@dataclass(frozen=True)
class Activity:
    """How busy a GPU or GPU instance was over the last sampling window, in percent (None: not reported).

    sm_active: SMs busy; sm_occupancy: resident warps of the maximum; tensor_active: any tensor-core work;
    dram_active: memory bandwidth used of the peak; graphics_active: any engine busy (NVML GPM's metrics)."""

    sm_active: float | None = None
    sm_occupancy: float | None = None
    tensor_active: float | None = None
    dram_active: float | None = None
    graphics_active: float | None = None


@dataclass(frozen=True)
class Health:
    """A whole GPU's readings, as dcgm-exporter's default counters name them (the field in brackets). None where
    the GPU does not report one; `missing` says why, field by field.

    gpu_temp, memory_temp     °C                     [DCGM_FI_DEV_GPU_TEMP, _MEMORY_TEMP]
    power_w                   W                      [_POWER_USAGE]
    energy_mj                 mJ since the driver loaded (a counter)  [_TOTAL_ENERGY_CONSUMPTION]
    sm_clock_mhz, mem_clock_mhz  MHz                 [_SM_CLOCK, _MEM_CLOCK]
    gpu_util, mem_copy_util, enc_util, dec_util  %   [_GPU_UTIL, _MEM_COPY_UTIL, _ENC_UTIL, _DEC_UTIL]; not with MIG
    pcie_replays              retries (a counter)    [_PCIE_REPLAY_COUNTER]
    pcie_tx_bytes, pcie_rx_bytes  bytes per second   [DCGM_FI_PROF_PCIE_TX_BYTES, _RX_BYTES]
    fb_reserved_mib           MiB the driver keeps   [_FB_RESERVED]
    nvlink_bandwidth          NVLink counter, all lanes  [_NVLINK_BANDWIDTH_TOTAL]
    rows_remapped_correctable, rows_remapped_uncorrectable, row_remap_failure  [_CORRECTABLE_REMAPPED_ROWS, ...]
    """

    gpu_temp: float | None = None
    memory_temp: float | None = None
    power_w: float | None = None
    energy_mj: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    gpu_util: float | None = None
    mem_copy_util: float | None = None
    enc_util: float | None = None
    dec_util: float | None = None
    pcie_replays: int | None = None
    pcie_tx_bytes: float | None = None
    pcie_rx_bytes: float | None = None
    fb_reserved_mib: int | None = None
    nvlink_bandwidth: int | None = None
    rows_remapped_correctable: int | None = None
    rows_remapped_uncorrectable: int | None = None
    row_remap_failure: int | None = None
    missing: tuple[tuple[str, str], ...] = ()  # (field, why it is not read)


HEALTH_FIELDS = tuple(f for f in Health.__dataclass_fields__ if f != "missing")


class Telemetry(ABC):
    """Readings of a GPU. Where a backend cannot read one, `activity` says why (NotSupportedError), `health`
    leaves the fields None with the reason in `missing`, and `xid_events` finds none."""

    kind: str = "abstract"

    @abstractmethod
    def memory_used_mib(self, gpu: int) -> int:
        """Memory in use on the whole GPU."""

    def activity(self, gpu: int, gi_id: int | None = None) -> Activity | None:
        """Activity of the GPU (or of its GPU instance `gi_id`) since the previous call for it; None on the first
        call, which opens the window. Raises NotSupportedError saying why where it cannot be read."""
        raise NotSupportedError(f"the {self.kind} backend does not read activity")

    def health(self, gpu: int) -> Health:
        """The GPU's temperatures, power, energy, clocks, utilization and error counters (Health); fields the GPU
        does not report are None, with the reason in `missing`."""
        return Health(missing=tuple((f, f"the {self.kind} backend does not read it") for f in HEALTH_FIELDS))

    def xid_events(self) -> list[tuple[int, int]]:
        """The XID errors (GPU index, XID) reported since the previous call, oldest first."""
        return []
