"""The NVML backend's driver control: the GPUs, their MIG profiles, GPU and compute instances, MIG devices and
processes as NVML reports them, and the calls that change them (base.py's DriverControl guards each)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import InUseError, InvalidArgumentError, NotSupportedError
from ...mig import catalog
from ...mig.catalog import GpuModel, Placement, Profile
from ...mig.instance import MigInstance
from ..control import ComputeInstanceInfo, DriverControl, GpuInfo, GpuInstanceInfo, ProcessInfo
from .session import NvmlSession, decode, error_code, process_name

_MAX_PLACEMENTS = 32
_MAX_INSTANCES = 32
_RESET_BLOCKERS = {
    "nvidia-persistenced": "nvidia-persistenced (persistence daemon)",
    "nv-hostengine": "nv-hostengine (DCGM host engine)",
    "dcgm-exporter": "dcgm-exporter",
    "nv-fabricmanager": "nv-fabricmanager (fabric manager)",
}


def running_reset_blockers() -> list[str]:
    """The daemons (seen in /proc) and kernel modules that commonly keep any GPU of this machine from a reset."""
    found = []
    for proc in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            comm = proc.read_text().strip()
            if comm in _RESET_BLOCKERS and _RESET_BLOCKERS[comm] not in found:
                found.append(_RESET_BLOCKERS[comm])
    if Path("/sys/module/nvidia_drm").exists():
        found.append("the nvidia_drm kernel module (loaded)")
    return found


def mig_config_permission_problem() -> str | None:
    """Why this process may not change MIG configuration (not root, and no read access to the MIG config
    capability), or None."""
    if os.geteuid() == 0:
        return None
    cap = Path("/proc/driver/nvidia/capabilities/mig/config")
    if cap.exists() and os.access(cap, os.R_OK):
        return None
    return (
        "changing MIG configuration needs root, or read access to the MIG config capability "
        f"({cap}, device /dev/nvidia-caps/nvidia-cap1); run with sudo or ask your administrator"
    )


class NvmlControl(NvmlSession, DriverControl):
    """Reads and changes of the MIG configuration through NVML. Each GPU's profile table is read once (`model`)
    and read again after a change of MIG mode or a reset."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        super().__init__(nvml)
        self._models: dict[int, GpuModel] = {}

    # --- reads ---
    def gpus(self) -> list[GpuInfo]:
        n = self.nvml
        out = []
        for i in range(self._wrap(n.nvmlDeviceGetCount)):
            h = self._handle(i)
            try:
                cur, pend = n.nvmlDeviceGetMigMode(h)
                capable = True
            except n.NVMLError as e:
                if error_code(e) != n.NVML_ERROR_NOT_SUPPORTED:
                    raise self._map(e, f"read MIG mode of GPU {i}") from None
                cur = pend = 0
                capable = False
            mem = self._wrap(n.nvmlDeviceGetMemoryInfo, h)
            pci, subsystem, bus = self._pci_ids(h)
            out.append(
                GpuInfo(
                    index=i,
                    uuid=decode(self._wrap(n.nvmlDeviceGetUUID, h)),
                    name=decode(self._wrap(n.nvmlDeviceGetName, h)),
                    memory_mib=int(mem.total) // 2**20,
                    mig_capable=capable,
                    mig_current=bool(cur),
                    mig_pending=bool(pend),
                    pci_device_id=pci,
                    pci_bus_id=bus,
                    pci_subsystem_id=subsystem,
                    minor=self._minor(h),
                )
            )
        return out

    def _minor(self, h: Any) -> int | None:
        """N of the GPU's /dev/nvidiaN (Slurm's gres.conf and the MIG capability files name GPUs by it)."""
        try:
            return int(self.nvml.nvmlDeviceGetMinorNumber(h))
        except self.nvml.NVMLError:
            return None

    def _pci_ids(self, h: Any) -> tuple[int | None, int | None, str]:
        """The GPU's PCI device+vendor id and subsystem id (mig-parted's device-filter matches them), and its bus
        id ('00000000:18:00.0', dcgm-exporter's pci_bus_id)."""
        try:
            info = self.nvml.nvmlDeviceGetPciInfo(h)
        except self.nvml.NVMLError:
            return None, None, ""
        return int(info.pciDeviceId), int(getattr(info, "pciSubSystemId", 0)) or None, decode(info.busId)

    def model(self, gpu: int) -> GpuModel:
        """Read the profile table and placements from the GPU itself (works with MIG mode disabled)."""
        if gpu in self._models:
            return self._models[gpu]
        n = self.nvml
        h = self._handle(gpu)
        name = decode(self._wrap(n.nvmlDeviceGetName, h))
        known = catalog.find_by_nvml_name(name)
        profiles: list[Profile] = []
        for index in range(n.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, index)
            except n.NVMLError as e:
                if error_code(e) in (n.NVML_ERROR_NOT_SUPPORTED, n.NVML_ERROR_INVALID_ARGUMENT):
                    continue
                raise self._map(e, f"read MIG profile {index} of GPU {gpu}") from None
            placements = self._placements(h, info.id)
            pname = decode(getattr(info, "name", b"")).removeprefix("MIG ").strip()
            if not pname:
                pname = f"{info.sliceCount}g.{round(info.memorySizeMB / 1024)}gb"
            profiles.append(
                Profile(
                    name=pname,
                    id=int(info.id),
                    nvml_index=index,
                    slices=int(info.sliceCount),
                    memory_mib=int(info.memorySizeMB),
                    sms=int(info.multiprocessorCount),
                    max_instances=int(info.instanceCount),
                    placements=placements,
                    compute_profiles=catalog.compute_profiles(
                        pname, int(info.sliceCount), int(info.multiprocessorCount)
                    ),
                    media=dict(
                        decoders=int(info.decoderCount),
                        encoders=int(info.encoderCount),
                        copy_engines=int(info.copyEngineCount),
                        jpeg=int(info.jpegCount),
                        ofa=int(info.ofaCount),
                    ),
                )
            )
        if not profiles:
            raise NotSupportedError(f"GPU {gpu} ({name}) reports no MIG profiles: it is not MIG-capable")
        mem = self._wrap(n.nvmlDeviceGetMemoryInfo, h)
        full = max(profiles, key=lambda p: p.slices)
        model = GpuModel(
            key=known.key if known else name,
            nvml_names=(name,),
            memory_mib=int(mem.total) // 2**20,
            sms=known.sms if known else full.sms,
            compute_slices=full.slices,
            memory_slices=max(pl.start + pl.size for p in profiles for pl in p.placements),
            profiles=tuple(profiles),
            aliases=known.aliases if known else (),
            source=f"read from GPU {gpu} through NVML",
            architecture=known.architecture if known else "",
        )
        self._models[gpu] = model
        return model

    def _placements(self, h: Any, profile_id: int) -> tuple[Placement, ...]:
        n = self.nvml
        buf = (n.c_nvmlGpuInstancePlacement_t * _MAX_PLACEMENTS)()
        count = ctypes.c_uint(_MAX_PLACEMENTS)
        self._wrap(
            n.nvmlDeviceGetGpuInstancePossiblePlacements,
            h,
            profile_id,
            buf,
            ctypes.byref(count),
            what=f"read placements of profile {profile_id}",
        )
        return tuple(Placement(int(buf[i].start), int(buf[i].size)) for i in range(count.value))

    def _gi_handles(self, gpu: int) -> list[tuple[Any, Any]]:
        """(handle, info) of every GPU instance on the GPU, by GI id."""
        n = self.nvml
        h = self._handle(gpu)
        if not self.gpu(gpu).mig_current:
            return []
        out = []
        for p in self.model(gpu).profiles:
            buf = (n.c_nvmlGpuInstance_t * _MAX_INSTANCES)()
            count = ctypes.c_uint(_MAX_INSTANCES)
            self._wrap(n.nvmlDeviceGetGpuInstances, h, p.id, buf, ctypes.byref(count), what=f"list {p.name} instances")
            for i in range(count.value):
                out.append((buf[i], self._wrap(n.nvmlGpuInstanceGetInfo, buf[i])))
        return sorted(out, key=lambda hi: hi[1].id)

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        model = self.model(gpu)
        return [
            GpuInstanceInfo(
                gpu=gpu,
                id=int(info.id),
                profile_id=int(info.profileId),
                profile_name=model.profile(int(info.profileId)).name,
                placement=Placement(int(info.placement.start), int(info.placement.size)),
            )
            for _, info in self._gi_handles(gpu)
        ]

    def _ci_handles(self, gpu: int) -> list[tuple[Any, Any, Any, int]]:
        """(gi info, ci handle, ci info, slices) of every compute instance."""
        n = self.nvml
        out: list[tuple[Any, Any, Any, int]] = []
        for gih, giinfo in self._gi_handles(gpu):
            for cindex in range(n.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
                try:
                    cinfo = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                        gih, cindex, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                    )
                except n.NVMLError:
                    continue
                buf = (n.c_nvmlComputeInstance_t * _MAX_INSTANCES)()
                count = ctypes.c_uint(_MAX_INSTANCES)
                self._wrap(n.nvmlGpuInstanceGetComputeInstances, gih, cinfo.id, buf, ctypes.byref(count))
                for i in range(count.value):
                    out.append(
                        (giinfo, buf[i], self._wrap(n.nvmlComputeInstanceGetInfo, buf[i]), int(cinfo.sliceCount))
                    )
        return out

    def compute_instances(self, gpu: int) -> list[ComputeInstanceInfo]:
        model = self.model(gpu)
        out = []
        for giinfo, _, ci, slices in self._ci_handles(gpu):
            p = model.profile(int(giinfo.profileId))
            name = p.name if slices == p.slices else f"{slices}c.{p.name}"
            out.append(
                ComputeInstanceInfo(
                    gpu=gpu,
                    gi_id=int(giinfo.id),
                    id=int(ci.id),
                    slices=slices,
                    profile_name=name,
                    start=int(ci.placement.start),
                )
            )
        return out

    def _mig_handles(self, gpu: int) -> list[Any]:
        n = self.nvml
        h = self._handle(gpu)
        if not self.gpu(gpu).mig_current:
            return []
        out = []
        for i in range(self._wrap(n.nvmlDeviceGetMaxMigDeviceCount, h)):
            try:
                out.append(n.nvmlDeviceGetMigDeviceHandleByIndex(h, i))
            except n.NVMLError as e:
                if error_code(e) == n.NVML_ERROR_NOT_FOUND:
                    continue
                raise self._map(e, f"MIG device {i} of GPU {gpu}") from None
        return out

    def mig_devices(self, gpu: int) -> list[MigInstance]:
        n = self.nvml
        gis = {g.id: g for g in self.gpu_instances(gpu)}
        cis = {(c.gi_id, c.id): c for c in self.compute_instances(gpu)}
        g = self.gpu(gpu)
        out = []
        for mh in self._mig_handles(gpu):
            gi_id = self._wrap(n.nvmlDeviceGetGpuInstanceId, mh)
            ci_id = self._wrap(n.nvmlDeviceGetComputeInstanceId, mh)
            mem = self._wrap(n.nvmlDeviceGetMemoryInfo, mh)
            gi = gis.get(gi_id)
            ci = cis.get((gi_id, ci_id))
            out.append(
                MigInstance(
                    gpu=gpu,
                    gpu_uuid=g.uuid,
                    gi_id=gi_id,
                    ci_id=ci_id,
                    uuid=decode(self._wrap(n.nvmlDeviceGetUUID, mh)),
                    profile_name=ci.profile_name if ci else (gi.profile_name if gi else "?"),
                    memory_mib=int(mem.total) // 2**20,
                    memory_used_mib=int(mem.used) // 2**20,
                    placement=gi.placement if gi else Placement(0, 0),
                    gpu_name=g.name,
                )
            )
        return sorted(out, key=lambda d: (d.gi_id, d.ci_id))

    def processes(self, gpu: int) -> list[ProcessInfo]:
        n = self.nvml
        h = self._handle(gpu)
        devices = [(h, self.gpu(gpu).uuid)] + [
            (mh, decode(self._wrap(n.nvmlDeviceGetUUID, mh))) for mh in self._mig_handles(gpu)
        ]
        out = []
        seen: set[tuple[int, str]] = set()
        for dh, duuid in devices:
            for p in self._wrap(n.nvmlDeviceGetComputeRunningProcesses, dh, what=f"list processes on {duuid}"):
                key = (int(p.pid), duuid)
                if key in seen:
                    continue
                seen.add(key)
                used = getattr(p, "usedGpuMemory", None)
                out.append(
                    ProcessInfo(
                        pid=int(p.pid),
                        name=process_name(int(p.pid)),
                        used_memory_mib=int(used) // 2**20 if isinstance(used, int) else 0,
                        gpu=gpu,
                        device_uuid=duuid,
                    )
                )
        return out

    def driver_version(self) -> str:
        return decode(self._wrap(self.nvml.nvmlSystemGetDriverVersion))

    def reset_blockers(self, gpu: int) -> list[str]:
        return running_reset_blockers()

    def permission_problem(self) -> str | None:
        return mig_config_permission_problem()

    # --- writes ---
    def _set_mig_mode(self, gpu: int, enabled: bool) -> bool:
        n = self.nvml
        h = self._handle(gpu)
        mode = n.NVML_DEVICE_MIG_ENABLE if enabled else n.NVML_DEVICE_MIG_DISABLE
        self._wrap(n.nvmlDeviceSetMigMode, h, mode, what=f"set MIG mode on GPU {gpu}")
        cur, pend = self._wrap(n.nvmlDeviceGetMigMode, h)
        self._models.pop(gpu, None)
        return bool(cur) == enabled

    def _create_gpu_instance(self, gpu: int, profile_id: int, placement: Placement) -> GpuInstanceInfo:
        n = self.nvml
        h = self._handle(gpu)
        pl = n.c_nvmlGpuInstancePlacement_t()
        pl.start, pl.size = placement.start, placement.size
        gih = self._wrap(
            n.nvmlDeviceCreateGpuInstanceWithPlacement,
            h,
            profile_id,
            ctypes.byref(pl),
            what=f"create GPU instance (profile {profile_id} at {placement}) on GPU {gpu}",
        )
        info = self._wrap(n.nvmlGpuInstanceGetInfo, gih)
        return GpuInstanceInfo(
            gpu=gpu,
            id=int(info.id),
            profile_id=profile_id,
            profile_name=self.model(gpu).profile(profile_id).name,
            placement=placement,
        )

    def _gi_handle(self, gpu: int, gi_id: int) -> Any:
        return self._wrap(
            self.nvml.nvmlDeviceGetGpuInstanceById, self._handle(gpu), gi_id, what=f"GPU instance {gi_id} on GPU {gpu}"
        )

    def _destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._wrap(
            self.nvml.nvmlGpuInstanceDestroy,
            self._gi_handle(gpu, gi_id),
            what=f"destroy GPU instance {gi_id} on GPU {gpu}",
        )

    def _create_compute_instance(self, gpu: int, gi_id: int, slices: int | None) -> ComputeInstanceInfo:
        n = self.nvml
        gih = self._gi_handle(gpu, gi_id)
        gi = next(g for g in self.gpu_instances(gpu) if g.id == gi_id)
        p = self.model(gpu).profile(gi.profile_id)
        want = slices or p.slices
        for cindex in range(n.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                cinfo = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gih, cindex, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                )
            except n.NVMLError:
                continue
            if int(cinfo.sliceCount) == want:
                cih = self._wrap(
                    n.nvmlGpuInstanceCreateComputeInstance,
                    gih,
                    cinfo.id,
                    what=f"create compute instance in GPU instance {gi_id} on GPU {gpu}",
                )
                ci = self._wrap(n.nvmlComputeInstanceGetInfo, cih)
                name = p.name if want == p.slices else f"{want}c.{p.name}"
                return ComputeInstanceInfo(
                    gpu=gpu, gi_id=gi_id, id=int(ci.id), slices=want, profile_name=name, start=int(ci.placement.start)
                )
        raise InvalidArgumentError(f"{p.name} offers no {want}-slice compute instance profile")

    def _destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None:
        n = self.nvml
        cih = self._wrap(
            n.nvmlGpuInstanceGetComputeInstanceById,
            self._gi_handle(gpu, gi_id),
            ci_id,
            what=f"compute instance {ci_id} of GPU instance {gi_id} on GPU {gpu}",
        )
        self._wrap(n.nvmlComputeInstanceDestroy, cih, what=f"destroy compute instance {ci_id} of GPU instance {gi_id}")

    def _reset_gpu(self, gpu: int) -> None:
        smi = shutil.which("nvidia-smi")
        if not smi:
            raise NotSupportedError("NVML has no GPU reset call and nvidia-smi is not on PATH")
        res = subprocess.run([smi, "--gpu-reset", "-i", str(gpu)], capture_output=True, text=True, check=False)
        self._models.pop(gpu, None)
        if res.returncode != 0:
            raise InUseError(f"GPU {gpu} reset failed: {(res.stdout + res.stderr).strip()}")
