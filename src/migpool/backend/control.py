"""Driver control, one of a backend's two concerns: what GPUs there are, their MIG mode and the GPU and compute
instances on them (the layout), the processes that use them, and the calls that change them. Every change goes
through `_guard`, which refuses it first when MIGPOOL_READ_ONLY is set."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import ReadOnlyError
from ..host.statedirs import StateDirs, system_dirs
from ..mig.catalog import GpuModel, Placement
from ..mig.instance import MigInstance

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


MigDeviceInfo = MigInstance  # the driver's name for a MIG device: the one MIG-instance value (mig/instance.py)


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str
    used_memory_mib: int
    gpu: int
    device_uuid: str  # the GPU's UUID, or the MIG device's


class DriverControl(ABC):
    """Reads of the GPUs and their MIG layout, and the guarded calls that change it."""

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
    def mig_devices(self, gpu: int) -> list[MigInstance]: ...

    @abstractmethod
    def processes(self, gpu: int) -> list[ProcessInfo]:
        """Compute processes on the GPU and on each of its MIG devices."""

    def reset_blockers(self, gpu: int) -> list[str]:
        """Things that commonly keep a GPU from being reset, as far as they can be seen."""
        return []

    def driver_version(self) -> str:
        return ""

    def mig_minors(self) -> dict[str, int]:
        """The driver's MIG capability minors (devicefiles.py): read from /proc on a real machine."""
        from ..host.devicefiles import read_minors

        return read_minors()

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
