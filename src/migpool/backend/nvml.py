"""The NVML backend, on nvidia-ml-py (`pynvml`). NVML errors become migpool errors with clear messages."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from ..errors import (
    BackendError,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    ResetRequiredError,
)
from ..mig import catalog
from ..mig.catalog import GpuModel, Placement, Profile
from .base import Activity, Backend, ComputeInstanceInfo, GpuInfo, GpuInstanceInfo, Health, MigDeviceInfo, ProcessInfo

T = TypeVar("T")
_MAX_PLACEMENTS = 32
_MAX_INSTANCES = 32
_RESET_BLOCKERS = {
    "nvidia-persistenced": "nvidia-persistenced (persistence daemon)",
    "nv-hostengine": "nv-hostengine (DCGM host engine)",
    "dcgm-exporter": "dcgm-exporter",
    "nv-fabricmanager": "nv-fabricmanager (fabric manager)",
}


def _decode(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"


class NvmlBackend(Backend):
    """Real GPUs through NVML. `nvml` may be a stand-in module with pynvml's API (tests use one)."""

    kind = "nvml"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        if nvml is None:
            try:
                import pynvml
            except ImportError as e:  # pragma: no cover - dependency is declared
                raise NotSupportedError("nvidia-ml-py is not installed; pip install nvidia-ml-py") from e
            nvml = pynvml
        self.nvml: Any = nvml  # pynvml has no type information: its calls are checked by the fake's tests
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            raise NotSupportedError(
                f"cannot talk to an NVIDIA driver here (NVML: {e}). On a machine without NVIDIA GPUs, simulate one: "
                "--simulate A100-80GB, MIGPOOL_SIMULATE=A100-80GB, or Local(simulate='A100-80GB')"
            ) from None
        self._models: dict[int, GpuModel] = {}
        self._gpm_samples: dict[tuple[int, int | None], Any] = {}
        self._gpm_support: dict[int, str | None] = {}
        self._events: Any = None  # the NVML event set that XID errors arrive on (made on first use)
        self._pcie_counters: bool | None = None  # whether the GPUs count PCIe bytes (None: not tried yet)
        self._pcie_prev: dict[int, tuple[float, int, int]] = {}  # GPU -> (when, bytes sent, bytes received)

    def close(self) -> None:
        for sample in self._gpm_samples.values():
            with contextlib.suppress(Exception):
                self.nvml.nvmlGpmSampleFree(sample)
        self._gpm_samples.clear()
        if self._events is not None:
            with contextlib.suppress(Exception):
                self.nvml.nvmlEventSetFree(self._events)
            self._events = None
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()

    # --- error mapping ---
    def _map(self, err: Exception, what: str) -> BackendError:
        n = self.nvml
        code = getattr(err, "value", None)
        table: dict[Any, tuple[type[BackendError], str]] = {
            n.NVML_ERROR_NOT_FOUND: (NotFoundError, "not found"),
            n.NVML_ERROR_IN_USE: (InUseError, "in use"),
            n.NVML_ERROR_INSUFFICIENT_RESOURCES: (InsufficientResourcesError, "insufficient resources"),
            n.NVML_ERROR_NO_PERMISSION: (
                NoPermissionError,
                "no permission: run as root, or grant access to the MIG capability devices (/dev/nvidia-caps)",
            ),
            n.NVML_ERROR_RESET_REQUIRED: (ResetRequiredError, "a GPU reset is required first"),
            n.NVML_ERROR_NOT_SUPPORTED: (NotSupportedError, "not supported by this GPU or driver"),
            n.NVML_ERROR_INVALID_ARGUMENT: (InvalidArgumentError, "invalid argument"),
        }
        cls, text = table.get(code, (BackendError, "NVML error"))
        return cls(f"{what}: {text} (NVML: {err})")

    def _wrap(self, fn: Callable[..., T], *args: Any, what: str = "") -> T:
        try:
            return fn(*args)
        except self.nvml.NVMLError as e:
            raise self._map(e, what or getattr(fn, "__name__", "NVML call")) from None

    def _handle(self, gpu: int) -> Any:
        return self._wrap(self.nvml.nvmlDeviceGetHandleByIndex, gpu, what=f"GPU {gpu}")

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
                if getattr(e, "value", None) != n.NVML_ERROR_NOT_SUPPORTED:
                    raise self._map(e, f"read MIG mode of GPU {i}") from None
                cur = pend = 0
                capable = False
            mem = self._wrap(n.nvmlDeviceGetMemoryInfo, h)
            pci, subsystem, bus = self._pci_ids(h)
            out.append(
                GpuInfo(
                    index=i,
                    uuid=_decode(self._wrap(n.nvmlDeviceGetUUID, h)),
                    name=_decode(self._wrap(n.nvmlDeviceGetName, h)),
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
        return int(info.pciDeviceId), int(getattr(info, "pciSubSystemId", 0)) or None, _decode(info.busId)

    def model(self, gpu: int) -> GpuModel:
        """Read the profile table and placements from the GPU itself (works with MIG mode disabled)."""
        if gpu in self._models:
            return self._models[gpu]
        n = self.nvml
        h = self._handle(gpu)
        name = _decode(self._wrap(n.nvmlDeviceGetName, h))
        known = catalog.find_by_nvml_name(name)
        profiles: list[Profile] = []
        for index in range(n.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, index)
            except n.NVMLError as e:
                if getattr(e, "value", None) in (n.NVML_ERROR_NOT_SUPPORTED, n.NVML_ERROR_INVALID_ARGUMENT):
                    continue
                raise self._map(e, f"read MIG profile {index} of GPU {gpu}") from None
            placements = self._placements(h, info.id)
            pname = _decode(getattr(info, "name", b"")).removeprefix("MIG ").strip()
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
                if getattr(e, "value", None) == n.NVML_ERROR_NOT_FOUND:
                    continue
                raise self._map(e, f"MIG device {i} of GPU {gpu}") from None
        return out

    def mig_devices(self, gpu: int) -> list[MigDeviceInfo]:
        n = self.nvml
        gis = {g.id: g for g in self.gpu_instances(gpu)}
        cis = {(c.gi_id, c.id): c for c in self.compute_instances(gpu)}
        gpu_uuid = self.gpu(gpu).uuid
        out = []
        for mh in self._mig_handles(gpu):
            gi_id = self._wrap(n.nvmlDeviceGetGpuInstanceId, mh)
            ci_id = self._wrap(n.nvmlDeviceGetComputeInstanceId, mh)
            mem = self._wrap(n.nvmlDeviceGetMemoryInfo, mh)
            gi = gis.get(gi_id)
            ci = cis.get((gi_id, ci_id))
            out.append(
                MigDeviceInfo(
                    gpu=gpu,
                    gpu_uuid=gpu_uuid,
                    gi_id=gi_id,
                    ci_id=ci_id,
                    uuid=_decode(self._wrap(n.nvmlDeviceGetUUID, mh)),
                    profile_name=ci.profile_name if ci else (gi.profile_name if gi else "?"),
                    memory_mib=int(mem.total) // 2**20,
                    memory_used_mib=int(mem.used) // 2**20,
                    placement=gi.placement if gi else Placement(0, 0),
                )
            )
        return sorted(out, key=lambda d: (d.gi_id, d.ci_id))

    def processes(self, gpu: int) -> list[ProcessInfo]:
        n = self.nvml
        h = self._handle(gpu)
        devices = [(h, self.gpu(gpu).uuid)] + [
            (mh, _decode(self._wrap(n.nvmlDeviceGetUUID, mh))) for mh in self._mig_handles(gpu)
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

    def memory_used_mib(self, gpu: int) -> int:
        return int(self._wrap(self.nvml.nvmlDeviceGetMemoryInfo, self._handle(gpu)).used) // 2**20

    # GPM metric ids, in the order of Activity's fields
    _GPM_METRICS = (
        "NVML_GPM_METRIC_SM_UTIL",
        "NVML_GPM_METRIC_SM_OCCUPANCY",
        "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
        "NVML_GPM_METRIC_DRAM_BW_UTIL",
        "NVML_GPM_METRIC_GRAPHICS_UTIL",
    )

    def _gpm_problem(self, gpu: int) -> str | None:
        if gpu not in self._gpm_support:
            n = self.nvml
            h = self._handle(gpu)
            if not hasattr(n, "nvmlGpmQueryDeviceSupport"):
                why: str | None = "this nvidia-ml-py has no GPM functions (upgrade nvidia-ml-py)"
            else:
                try:
                    why = (
                        None
                        if n.nvmlGpmQueryDeviceSupport(h).isSupportedDevice
                        else f"{_decode(n.nvmlDeviceGetName(h))} has no GPM "
                        "(per-instance activity counters need Hopper or later)"
                    )
                except n.NVMLError as e:
                    why = str(self._map(e, f"query GPM support of GPU {gpu}"))
            self._gpm_support[gpu] = why
        return self._gpm_support[gpu]

    def activity(self, gpu: int, gi_id: int | None = None) -> Activity | None:
        n = self.nvml
        why = self._gpm_problem(gpu)
        if why:
            raise NotSupportedError(why)
        h = self._handle(gpu)
        sample = self._wrap(n.nvmlGpmSampleAlloc, what="allocate a GPM sample")
        try:
            if gi_id is None:
                self._wrap(n.nvmlGpmSampleGet, h, sample, what=f"GPM sample of GPU {gpu}")
            else:
                self._wrap(n.nvmlGpmMigSampleGet, h, gi_id, sample, what=f"GPM sample of GPU {gpu} instance {gi_id}")
        except BackendError:
            n.nvmlGpmSampleFree(sample)
            raise
        prev = self._gpm_samples.get((gpu, gi_id))
        self._gpm_samples[(gpu, gi_id)] = sample
        if prev is None:
            return None
        try:
            req = n.c_nvmlGpmMetricsGet_t()
            req.version = n.NVML_GPM_METRICS_GET_VERSION
            req.numMetrics = len(self._GPM_METRICS)
            req.sample1, req.sample2 = prev, sample
            for i, name in enumerate(self._GPM_METRICS):
                req.metrics[i].metricId = getattr(n, name)
            self._wrap(n.nvmlGpmMetricsGet, req, what=f"GPM metrics of GPU {gpu}")
            values = [
                float(req.metrics[i].value) if req.metrics[i].nvmlReturn == n.NVML_SUCCESS else None
                for i in range(len(self._GPM_METRICS))
            ]
        finally:
            n.nvmlGpmSampleFree(prev)
        return Activity(*values)

    def health(self, gpu: int) -> Health:
        """One reading of each of dcgm-exporter's default device counters that NVML gives (Health); a field the
        GPU or driver does not report is None, with NVML's reason."""
        n = self.nvml
        h = self._handle(gpu)
        got: dict[str, Any] = {}
        missing: list[tuple[str, str]] = []
        try:
            mig = bool(n.nvmlDeviceGetMigMode(h)[0])
        except n.NVMLError:
            mig = False

        def read(fields: tuple[str, ...], call: Callable[[], Any], convert: Callable[[Any], tuple[Any, ...]]) -> None:
            try:
                values = convert(call())
            except n.NVMLError as e:
                why = "not supported by this GPU or driver" if _code(e) == n.NVML_ERROR_NOT_SUPPORTED else str(e)
                if _code(e) == n.NVML_ERROR_NOT_SUPPORTED and mig and fields[0].endswith("util"):
                    why = "not reported while MIG is enabled (NVML)"
                missing.extend((f, why) for f in fields)
                return
            got.update(zip(fields, values, strict=True))

        read(("gpu_temp",), lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU), lambda v: (float(v),))
        read(("memory_temp",), lambda: self._field(h, n.NVML_FI_DEV_MEMORY_TEMP), lambda v: (float(v),))
        read(("power_w",), lambda: n.nvmlDeviceGetPowerUsage(h), lambda v: (v / 1000.0,))
        read(("energy_mj",), lambda: n.nvmlDeviceGetTotalEnergyConsumption(h), lambda v: (int(v),))
        read(("sm_clock_mhz",), lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM), lambda v: (int(v),))
        read(("mem_clock_mhz",), lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM), lambda v: (int(v),))
        read(
            ("gpu_util", "mem_copy_util"),
            lambda: n.nvmlDeviceGetUtilizationRates(h),
            lambda u: (float(u.gpu), float(u.memory)),
        )
        read(("enc_util",), lambda: n.nvmlDeviceGetEncoderUtilization(h), lambda v: (float(v[0]),))
        read(("dec_util",), lambda: n.nvmlDeviceGetDecoderUtilization(h), lambda v: (float(v[0]),))
        read(("pcie_replays",), lambda: n.nvmlDeviceGetPcieReplayCounter(h), lambda v: (int(v),))
        read(("pcie_tx_bytes", "pcie_rx_bytes"), lambda: self._pcie_rates(gpu, h), lambda r: r)
        read(
            ("fb_reserved_mib",),
            lambda: n.nvmlDeviceGetMemoryInfo(h, version=n.nvmlMemory_v2),
            lambda m: (int(m.reserved) // 2**20,),
        )
        read(
            ("nvlink_bandwidth",),
            lambda: self._field(h, n.NVML_FI_DEV_NVLINK_BANDWIDTH_C0_TOTAL),
            lambda v: (int(v),),
        )
        read(
            ("rows_remapped_correctable", "rows_remapped_uncorrectable", "row_remap_failure"),
            lambda: n.nvmlDeviceGetRemappedRows(h),
            lambda r: (int(r[0]), int(r[1]), int(r[3])),
        )
        return Health(**got, missing=tuple(missing))

    def _pcie_rates(self, gpu: int, h: Any) -> tuple[float, float]:
        """PCIe bytes per second sent and received: from the driver's byte counters (NVML field values, read at
        once) over the time since the previous reading; where the GPU has none, from nvmlDeviceGetPcieThroughput,
        which blocks 20 ms for each direction (measured on an H200: two such calls were 40 of a pass's 46 ms)."""
        n = self.nvml
        now = time.monotonic()
        if self._pcie_counters is not False:
            try:
                tx = int(self._field(h, n.NVML_FI_DEV_PCIE_COUNT_TX_BYTES))
                rx = int(self._field(h, n.NVML_FI_DEV_PCIE_COUNT_RX_BYTES))
            except (n.NVMLError, AttributeError):
                self._pcie_counters = False
            else:
                self._pcie_counters = True
                prev = self._pcie_prev.get(gpu)
                self._pcie_prev[gpu] = (now, tx, rx)
                if prev is None or now <= prev[0]:
                    return 0.0, 0.0  # (the first reading opens the window)
                dt = now - prev[0]
                return max(0, tx - prev[1]) / dt, max(0, rx - prev[2]) / dt
        kb_tx = n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_TX_BYTES)
        kb_rx = n.nvmlDeviceGetPcieThroughput(h, n.NVML_PCIE_UTIL_RX_BYTES)
        return kb_tx * 1024.0, kb_rx * 1024.0

    def _field(self, h: Any, field_id: int) -> Any:
        """One NVML field value (nvmlDeviceGetFieldValues), raising its own NVML error where it has one."""
        n = self.nvml
        v = n.nvmlDeviceGetFieldValues(h, [field_id])[0]
        if v.nvmlReturn != n.NVML_SUCCESS:
            raise n.NVMLError(v.nvmlReturn)
        kinds = {
            n.NVML_VALUE_TYPE_DOUBLE: "dVal",
            n.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
            n.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
            n.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
            n.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        }
        return getattr(v.value, kinds.get(v.valueType, "ullVal"))

    def driver_version(self) -> str:
        return _decode(self._wrap(self.nvml.nvmlSystemGetDriverVersion))

    def xid_events(self) -> list[tuple[int, int]]:
        """XID errors since the previous call, from an NVML event set made on the first call (each GPU registered
        for nvmlEventTypeXidCriticalError; a GPU that cannot deliver them is left out)."""
        n = self.nvml
        if self._events is None:
            self._events = self._wrap(n.nvmlEventSetCreate)
            for i in range(self._wrap(n.nvmlDeviceGetCount)):
                with contextlib.suppress(n.NVMLError):
                    n.nvmlDeviceRegisterEvents(self._handle(i), n.nvmlEventTypeXidCriticalError, self._events)
        index: dict[str, int] = {}
        out: list[tuple[int, int]] = []
        while True:
            try:
                ev = n.nvmlEventSetWait_v2(self._events, 0)
            except n.NVMLError as e:
                if _code(e) != n.NVML_ERROR_TIMEOUT:
                    raise self._map(e, "read XID events") from None
                return out
            if ev.eventType & n.nvmlEventTypeXidCriticalError:
                key = _decode(n.nvmlDeviceGetUUID(ev.device))
                if not index:
                    index = {g.uuid: g.index for g in self.gpus()}
                out.append((index.get(key, -1), int(ev.eventData)))

    def reset_blockers(self, gpu: int) -> list[str]:
        found = []
        for proc in Path("/proc").glob("[0-9]*/comm"):
            with contextlib.suppress(OSError):
                comm = proc.read_text().strip()
                if comm in _RESET_BLOCKERS and _RESET_BLOCKERS[comm] not in found:
                    found.append(_RESET_BLOCKERS[comm])
        if Path("/sys/module/nvidia_drm").exists():
            found.append("the nvidia_drm kernel module (loaded)")
        return found

    def permission_problem(self) -> str | None:
        if os.geteuid() == 0:
            return None
        cap = Path("/proc/driver/nvidia/capabilities/mig/config")
        if cap.exists() and os.access(cap, os.R_OK):
            return None
        return (
            "changing MIG configuration needs root, or read access to the MIG config capability "
            f"({cap}, device /dev/nvidia-caps/nvidia-cap1); run with sudo or ask your administrator"
        )

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


def _code(e: Exception) -> Any:
    return getattr(e, "value", None)
