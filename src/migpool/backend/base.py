"""The interface migpool needs from a GPU driver, and the records it returns."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import ReadOnlyError
from ..host.statedirs import StateDirs, system_dirs
from ..mig.catalog import GpuModel, Placement

READ_ONLY_ENV = "MIGPOOL_READ_ONLY"


def read_only() -> bool:
    """True when MIGPOOL_READ_ONLY asks migpool to refuse every mutating driver call."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_mib: int
    mig_capable: bool
    mig_current: bool
    mig_pending: bool
    pci_device_id: int | None = None  # the PCI device and vendor ids, 0x233010DE
    pci_subsystem_id: int | None = None  # the PCI subsystem device and vendor ids, where the driver says
    pci_bus_id: str = ""  # "00000000:18:00.0", as NVML (and dcgm-exporter's pci_bus_id label) writes it
    minor: int | None = None  # N of /dev/nvidiaN; None where the driver does not say (then taken as the index)

    @property
    def device_minor(self) -> int:
        return self.index if self.minor is None else self.minor

    @property
    def mig_mode(self) -> str:
        """Like `mig_mode_short`, with a pending change spelled out."""
        cur, _, pending = self.mig_mode_short.partition("→")
        return f"{cur} (pending {pending}, reset required)" if pending else cur

    @property
    def mig_mode_short(self) -> str:
        """'Enabled', 'Disabled', 'N/A', or 'Enabled→Disabled' while a change waits for a GPU reset."""
        if not self.mig_capable:
            return "N/A"
        cur = "Enabled" if self.mig_current else "Disabled"
        return cur if self.mig_pending == self.mig_current else f"{cur}→{'Enabled' if self.mig_pending else 'Disabled'}"


@dataclass(frozen=True)
class GpuInstanceInfo:
    gpu: int
    id: int
    profile_id: int
    profile_name: str
    placement: Placement


@dataclass(frozen=True)
class ComputeInstanceInfo:
    gpu: int
    gi_id: int
    id: int
    slices: int
    profile_name: str
    start: int = 0  # its first compute slice inside its GPU instance


@dataclass(frozen=True)
class MigDeviceInfo:
    """A MIG device (a GI and one CI), what CUDA sees through CUDA_VISIBLE_DEVICES=MIG-<uuid>."""

    gpu: int
    gpu_uuid: str
    gi_id: int
    ci_id: int
    uuid: str
    profile_name: str
    memory_mib: int
    memory_used_mib: int
    placement: Placement


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


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str
    used_memory_mib: int
    gpu: int
    device_uuid: str  # the GPU's UUID, or the MIG device's


HEALTH_FIELDS = tuple(f for f in Health.__dataclass_fields__ if f != "missing")


class Backend(ABC):
    """A GPU driver. Mutating calls go through `_guard`, which enforces MIGPOOL_READ_ONLY first."""

    kind: str = "abstract"

    # --- reads ---
    @abstractmethod
    def gpus(self) -> list[GpuInfo]: ...

    @abstractmethod
    def model(self, gpu: int) -> GpuModel:
        """The profile table and placements of this GPU, as the driver reports them."""

    @abstractmethod
    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]: ...

    @abstractmethod
    def compute_instances(self, gpu: int) -> list[ComputeInstanceInfo]: ...

    @abstractmethod
    def mig_devices(self, gpu: int) -> list[MigDeviceInfo]: ...

    @abstractmethod
    def processes(self, gpu: int) -> list[ProcessInfo]:
        """Compute processes on the GPU and on each of its MIG devices."""

    def reset_blockers(self, gpu: int) -> list[str]:
        """Things that commonly keep a GPU from being reset, as far as they can be seen."""
        return []

    def memory_used_mib(self, gpu: int) -> int:
        """Memory in use on the whole GPU."""
        return sum(p.used_memory_mib for p in self.processes(gpu))

    def activity(self, gpu: int, gi_id: int | None = None) -> Activity | None:
        """Activity of the GPU (or of its GPU instance `gi_id`) since the previous call for it; None on the first
        call, which opens the window. Raises NotSupportedError saying why where it cannot be read."""
        from ..errors import NotSupportedError

        raise NotSupportedError(f"the {self.kind} backend does not read activity")

    def health(self, gpu: int) -> Health:
        """The GPU's temperatures, power, energy, clocks, utilization and error counters (Health); fields the GPU
        does not report are None, with the reason in `missing`."""
        return Health(missing=tuple((f, f"the {self.kind} backend does not read it") for f in HEALTH_FIELDS))

    def driver_version(self) -> str:
        return ""

    def mig_minors(self) -> dict[str, int]:
        """The driver's MIG capability minors (devicefiles.py): read from /proc on a real machine."""
        from ..host.devicefiles import read_minors

        return read_minors()

    def xid_events(self) -> list[tuple[int, int]]:
        """The XID errors (GPU index, XID) reported since the previous call, oldest first."""
        return []

    def state_dirs(self) -> StateDirs:
        """Where the apply locks, partition leases and the journal of this backend's GPUs live: machine-wide
        for real GPUs (statedirs.py)."""
        return system_dirs()

    def permission_problem(self) -> str | None:
        """Why this process may not change MIG configuration, or None if it may."""
        return None

    def gpu(self, index: int) -> GpuInfo:
        for g in self.gpus():
            if g.index == index:
                return g
        from ..errors import NotFoundError

        raise NotFoundError(f"no GPU with index {index}; GPUs: {[g.index for g in self.gpus()]}")

    # --- writes (guarded) ---
    def _guard(self, what: str) -> None:
        if read_only():
            raise ReadOnlyError(
                f"refused to {what}: {READ_ONLY_ENV} is set, so migpool makes no change to any GPU. "
                f"Unset {READ_ONLY_ENV} to allow changes (needs root or the MIG capability device)."
            )

    def set_mig_mode(self, gpu: int, enabled: bool) -> bool:
        """Set MIG mode; True if it took effect now, False if it is pending a GPU reset."""
        self._guard(f"{'enable' if enabled else 'disable'} MIG mode on GPU {gpu}")
        return self._set_mig_mode(gpu, enabled)

    def create_gpu_instance(self, gpu: int, profile_id: int, placement: Placement) -> GpuInstanceInfo:
        self._guard(f"create a GPU instance (profile {profile_id} at {placement}) on GPU {gpu}")
        return self._create_gpu_instance(gpu, profile_id, placement)

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._guard(f"destroy GPU instance {gi_id} on GPU {gpu}")
        self._destroy_gpu_instance(gpu, gi_id)

    def create_compute_instance(self, gpu: int, gi_id: int, slices: int | None = None) -> ComputeInstanceInfo:
        """Create a CI in GPU instance `gi_id`; `slices` None means the whole GI."""
        self._guard(f"create a compute instance in GPU instance {gi_id} on GPU {gpu}")
        return self._create_compute_instance(gpu, gi_id, slices)

    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None:
        self._guard(f"destroy compute instance {ci_id} of GPU instance {gi_id} on GPU {gpu}")
        self._destroy_compute_instance(gpu, gi_id, ci_id)

    def reset_gpu(self, gpu: int) -> None:
        self._guard(f"reset GPU {gpu}")
        self._reset_gpu(gpu)

    @abstractmethod
    def _set_mig_mode(self, gpu: int, enabled: bool) -> bool: ...

    @abstractmethod
    def _create_gpu_instance(self, gpu: int, profile_id: int, placement: Placement) -> GpuInstanceInfo: ...

    @abstractmethod
    def _destroy_gpu_instance(self, gpu: int, gi_id: int) -> None: ...

    @abstractmethod
    def _create_compute_instance(self, gpu: int, gi_id: int, slices: int | None) -> ComputeInstanceInfo: ...

    @abstractmethod
    def _destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None: ...

    @abstractmethod
    def _reset_gpu(self, gpu: int) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook: only backends that hold driver resources override it
        """Release driver resources."""
