"""A stand-in for the `pynvml` module, driven by migpool's simulator.

Same function names and ctypes calling style as nvidia-ml-py, same NVMLError classes and codes, so
NvmlBackend's calls and error mapping are exercised without a GPU.
"""

from __future__ import annotations

import ctypes
import types
from dataclasses import dataclass
from typing import Any

import pynvml as real

from migpool import errors
from migpool.backend.simulated import SimulatedBackend
from migpool.mig.catalog import Placement

_CODES = {
    errors.InsufficientResourcesError: real.NVML_ERROR_INSUFFICIENT_RESOURCES,
    errors.InUseError: real.NVML_ERROR_IN_USE,
    errors.NotFoundError: real.NVML_ERROR_NOT_FOUND,
    errors.ResetRequiredError: real.NVML_ERROR_RESET_REQUIRED,
    errors.NotSupportedError: real.NVML_ERROR_NOT_SUPPORTED,
    errors.InvalidArgumentError: real.NVML_ERROR_INVALID_ARGUMENT,
    errors.NoPermissionError: real.NVML_ERROR_NO_PERMISSION,
}
_CI_INDEX_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}


@dataclass(frozen=True)
class Device:
    gpu: int
    mig: tuple[int, int] | None = None  # (gi id, ci id) for a MIG device handle


def _gi_handle(gpu: int, gi: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(0x1000 + gpu * 256 + gi), real.c_nvmlGpuInstance_t)


def _ci_handle(gpu: int, gi: int, ci: int) -> Any:
    return ctypes.cast(ctypes.c_void_p(0x100000 + gpu * 65536 + gi * 256 + ci), real.c_nvmlComputeInstance_t)


def _addr(h: Any) -> int:
    return ctypes.cast(h, ctypes.c_void_p).value or 0


def make(sim: SimulatedBackend, non_mig: tuple[str, ...] = (), no_permission: bool = False) -> types.ModuleType:
    """A pynvml-like module over `sim`; `non_mig` adds GPUs without MIG support after the simulated ones."""
    m = types.ModuleType("fake_pynvml")
    for k in dir(real):
        if k.startswith(
            (
                "NVML_",
                "c_nvml",
                "NVMLError",
                "nvmlGpuInstanceProfileInfo",
                "nvmlComputeInstanceProfileInfo",
                "nvmlMemory_v2",
                "nvmlEventType",
            )
        ):
            setattr(m, k, getattr(real, k))
    m.calls = []  # type: ignore[attr-defined]

    def err(code: int) -> real.NVMLError:
        return real.NVMLError(code)

    def call(fn: Any, *a: Any) -> Any:
        try:
            return fn(*a)
        except errors.BackendError as e:
            raise err(_CODES.get(type(e), real.NVML_ERROR_UNKNOWN)) from None

    def nsim() -> int:
        return len(sim.models)

    def gpu_of(h: Device) -> int:
        if h.gpu >= nsim():
            raise err(real.NVML_ERROR_NOT_SUPPORTED)
        return h.gpu

    def api(fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            m.calls.append(fn.__name__)  # type: ignore[attr-defined]
            return fn(*a, **kw)

        wrapper.__name__ = fn.__name__
        setattr(m, fn.__name__, wrapper)
        return wrapper

    @api
    def nvmlInit() -> None:
        return None

    @api
    def nvmlShutdown() -> None:
        return None

    @api
    def nvmlDeviceGetCount() -> int:
        return nsim() + len(non_mig)

    @api
    def nvmlDeviceGetHandleByIndex(i: int) -> Device:
        if not 0 <= i < nsim() + len(non_mig):
            raise err(real.NVML_ERROR_INVALID_ARGUMENT)
        return Device(i)

    @api
    def nvmlDeviceGetName(h: Device) -> str:
        return non_mig[h.gpu - nsim()] if h.gpu >= nsim() else sim.models[h.gpu].name

    @api
    def nvmlDeviceGetUUID(h: Device) -> str:
        if h.mig:
            for d in sim.mig_devices(h.gpu):
                if (d.gi_id, d.ci_id) == h.mig:
                    return d.uuid
            raise err(real.NVML_ERROR_NOT_FOUND)
        if h.gpu >= nsim():
            return f"GPU-00000000-0000-0000-0000-{h.gpu:012d}"
        return sim.gpus()[h.gpu].uuid

    @api
    def nvmlDeviceGetMinorNumber(h: Device) -> int:
        return h.gpu

    @api
    def nvmlDeviceGetPciInfo(h: Device) -> Any:
        ids = sim.models[h.gpu].pci_device_ids if h.gpu < nsim() else ()
        bus = sim.gpus()[h.gpu].pci_bus_id if h.gpu < nsim() else f"00000000:{0x80 + h.gpu:02X}:00.0"
        return types.SimpleNamespace(pciDeviceId=ids[0] if ids else 0x1EB810DE, busId=bus.encode())

    @api
    def nvmlDeviceGetMemoryInfo(h: Device, version: int | None = None) -> Any:
        reserved = 0 if version is None or h.gpu >= nsim() else reading(h, "fb_reserved_mib") * 2**20
        if h.mig:
            d = next(d for d in sim.mig_devices(h.gpu) if (d.gi_id, d.ci_id) == h.mig)
            return types.SimpleNamespace(total=d.memory_mib * 2**20, used=d.memory_used_mib * 2**20, free=0)
        total = sim.models[h.gpu].memory_mib if h.gpu < nsim() else 15360
        used = sim.memory_used_mib(h.gpu) if h.gpu < nsim() else 0
        free = (total - used) * 2**20 - reserved
        return types.SimpleNamespace(total=total * 2**20, used=used * 2**20, free=free, reserved=reserved)

    @api
    def nvmlDeviceGetMigMode(h: Device) -> list[int]:
        g = sim.gpus()[gpu_of(h)]
        return [int(g.mig_current), int(g.mig_pending)]

    @api
    def nvmlDeviceSetMigMode(h: Device, mode: int) -> int:
        if no_permission:
            raise err(real.NVML_ERROR_NO_PERMISSION)
        call(sim.set_mig_mode, gpu_of(h), mode == real.NVML_DEVICE_MIG_ENABLE)
        return real.NVML_SUCCESS

    @api
    def nvmlDeviceGetGpuInstanceProfileInfo(h: Device, index: int, version: int = 2) -> Any:
        model = sim.models[gpu_of(h)]
        for p in model.profiles:
            if p.nvml_index == index:
                info = real.c_nvmlGpuInstanceProfileInfo_v2_t()
                info.id, info.sliceCount, info.instanceCount = p.id, p.slices, p.max_instances
                info.multiprocessorCount, info.memorySizeMB = p.sms, p.memory_mib
                info.name = f"MIG {p.name}".encode()
                return info
        raise err(
            real.NVML_ERROR_NOT_SUPPORTED
            if index < real.NVML_GPU_INSTANCE_PROFILE_COUNT
            else real.NVML_ERROR_INVALID_ARGUMENT
        )

    def profile_by_id(gpu: int, pid: int) -> Any:
        for p in sim.models[gpu].profiles:
            if p.id == pid:
                return p
        raise err(real.NVML_ERROR_INVALID_ARGUMENT)

    @api
    def nvmlDeviceGetGpuInstancePossiblePlacements(h: Device, pid: int, buf: Any, countRef: Any) -> int:
        p = profile_by_id(gpu_of(h), pid)
        count = countRef._obj
        if count.value < len(p.placements):
            count.value = len(p.placements)
            raise err(real.NVML_ERROR_INSUFFICIENT_SIZE)
        for i, pl in enumerate(p.placements):
            buf[i].start, buf[i].size = pl.start, pl.size
        count.value = len(p.placements)
        return real.NVML_SUCCESS

    def require_mig(gpu: int) -> None:
        g = sim.gpus()[gpu]
        if not g.mig_current:
            raise err(real.NVML_ERROR_NOT_SUPPORTED)

    @api
    def nvmlDeviceGetGpuInstances(h: Device, pid: int, buf: Any, countRef: Any) -> int:
        gpu = gpu_of(h)
        require_mig(gpu)
        gis = [g for g in sim.gpu_instances(gpu) if g.profile_id == pid]
        count = countRef._obj
        for i, gi in enumerate(gis):
            buf[i] = _gi_handle(gpu, gi.id)
        count.value = len(gis)
        return real.NVML_SUCCESS

    def gi_of(gih: Any) -> tuple[int, Any]:
        a = _addr(gih) - 0x1000
        gpu, gid = divmod(a, 256)
        for g in sim.gpu_instances(gpu):
            if g.id == gid:
                return gpu, g
        raise err(real.NVML_ERROR_NOT_FOUND)

    @api
    def nvmlGpuInstanceGetInfo(gih: Any) -> Any:
        gpu, g = gi_of(gih)
        info = real.c_nvmlGpuInstanceInfo_t()
        info.id, info.profileId = g.id, g.profile_id
        info.placement.start, info.placement.size = g.placement.start, g.placement.size
        return info

    @api
    def nvmlDeviceGetGpuInstanceById(h: Device, gid: int) -> Any:
        gpu = gpu_of(h)
        if not any(g.id == gid for g in sim.gpu_instances(gpu)):
            raise err(real.NVML_ERROR_NOT_FOUND)
        return _gi_handle(gpu, gid)

    @api
    def nvmlDeviceCreateGpuInstanceWithPlacement(h: Device, pid: int, placementRef: Any) -> Any:
        if no_permission:
            raise err(real.NVML_ERROR_NO_PERMISSION)
        gpu = gpu_of(h)
        pl = placementRef._obj
        g = call(sim.create_gpu_instance, gpu, pid, Placement(pl.start, pl.size))
        return _gi_handle(gpu, g.id)

    @api
    def nvmlGpuInstanceDestroy(gih: Any) -> int:
        gpu, g = gi_of(gih)
        call(sim.destroy_gpu_instance, gpu, g.id)
        return real.NVML_SUCCESS

    @api
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(gih: Any, index: int, eng: int, version: int = 2) -> Any:
        gpu, g = gi_of(gih)
        p = sim.models[gpu].profile(g.profile_id)
        slices = _CI_INDEX_SLICES.get(index)
        if slices not in [c.slices for c in p.compute_profiles]:
            raise err(real.NVML_ERROR_NOT_SUPPORTED)
        info = real.c_nvmlComputeInstanceProfileInfo_v2_t()
        info.id, info.sliceCount = index, slices
        info.instanceCount, info.multiprocessorCount = p.slices // slices, p.sms * slices // p.slices
        return info

    def cis_of(gpu: int, gid: int) -> list[Any]:
        return [c for c in sim.compute_instances(gpu) if c.gi_id == gid]

    @api
    def nvmlGpuInstanceGetComputeInstances(gih: Any, ci_pid: int, buf: Any, countRef: Any) -> int:
        gpu, g = gi_of(gih)
        cis = [c for c in cis_of(gpu, g.id) if c.slices == _CI_INDEX_SLICES[ci_pid]]
        for i, c in enumerate(cis):
            buf[i] = _ci_handle(gpu, g.id, c.id)
        countRef._obj.value = len(cis)
        return real.NVML_SUCCESS

    def ci_of(cih: Any) -> tuple[int, int, int]:
        a = _addr(cih) - 0x100000
        gpu, rest = divmod(a, 65536)
        gid, cid = divmod(rest, 256)
        if not any(c.id == cid for c in cis_of(gpu, gid)):
            raise err(real.NVML_ERROR_NOT_FOUND)
        return gpu, gid, cid

    @api
    def nvmlComputeInstanceGetInfo(cih: Any) -> Any:
        gpu, gid, cid = ci_of(cih)
        info = real.c_nvmlComputeInstanceInfo_t()
        info.id = cid
        info.placement.start = next(c.start for c in cis_of(gpu, gid) if c.id == cid)
        info.placement.size = next(c.slices for c in cis_of(gpu, gid) if c.id == cid)
        return info

    @api
    def nvmlGpuInstanceGetComputeInstanceById(gih: Any, cid: int) -> Any:
        gpu, g = gi_of(gih)
        if not any(c.id == cid for c in cis_of(gpu, g.id)):
            raise err(real.NVML_ERROR_NOT_FOUND)
        return _ci_handle(gpu, g.id, cid)

    @api
    def nvmlGpuInstanceCreateComputeInstance(gih: Any, ci_pid: int) -> Any:
        gpu, g = gi_of(gih)
        c = call(sim.create_compute_instance, gpu, g.id, _CI_INDEX_SLICES[ci_pid])
        return _ci_handle(gpu, g.id, c.id)

    @api
    def nvmlComputeInstanceDestroy(cih: Any) -> int:
        gpu, gid, cid = ci_of(cih)
        call(sim.destroy_compute_instance, gpu, gid, cid)
        return real.NVML_SUCCESS

    @api
    def nvmlDeviceGetMaxMigDeviceCount(h: Device) -> int:
        gpu = gpu_of(h)
        return sim.models[gpu].compute_slices if sim.gpus()[gpu].mig_current else 0

    @api
    def nvmlDeviceGetMigDeviceHandleByIndex(h: Device, i: int) -> Device:
        devs = sim.mig_devices(gpu_of(h))
        if i >= len(devs):
            raise err(real.NVML_ERROR_NOT_FOUND)
        return Device(h.gpu, (devs[i].gi_id, devs[i].ci_id))

    @api
    def nvmlDeviceGetGpuInstanceId(h: Device) -> int:
        if not h.mig:
            raise err(real.NVML_ERROR_INVALID_ARGUMENT)
        return h.mig[0]

    @api
    def nvmlDeviceGetComputeInstanceId(h: Device) -> int:
        if not h.mig:
            raise err(real.NVML_ERROR_INVALID_ARGUMENT)
        return h.mig[1]

    @api
    def nvmlDeviceGetComputeRunningProcesses(h: Device) -> list[Any]:
        if h.gpu >= nsim():
            return []
        want = nvmlDeviceGetUUID(h)
        return [
            types.SimpleNamespace(pid=p.pid, usedGpuMemory=p.used_memory_mib * 2**20)
            for p in sim.processes(h.gpu)
            if p.device_uuid == want
        ]

    # --- GPM: samples are real ctypes pointers (as the backend stores them in c_nvmlGpmMetricsGet_t) whose
    # addresses key what the simulator reported when each was taken
    samples: dict[int, dict[str, float] | None] = {}
    m.gpm_samples = samples  # type: ignore[attr-defined]
    next_addr = [0x7000000]
    metric_fields = {
        real.NVML_GPM_METRIC_SM_UTIL: "sm_active",
        real.NVML_GPM_METRIC_SM_OCCUPANCY: "sm_occupancy",
        real.NVML_GPM_METRIC_ANY_TENSOR_UTIL: "tensor_active",
        real.NVML_GPM_METRIC_DRAM_BW_UTIL: "dram_active",
        real.NVML_GPM_METRIC_GRAPHICS_UTIL: "graphics_active",
    }

    @api
    def nvmlGpmQueryDeviceSupport(h: Device) -> Any:
        return types.SimpleNamespace(version=1, isSupportedDevice=int(h.gpu < nsim() and sim.models[h.gpu].has_gpm))

    @api
    def nvmlGpmSampleAlloc() -> Any:
        next_addr[0] += 16
        samples[next_addr[0]] = None
        return ctypes.cast(ctypes.c_void_p(next_addr[0]), real.c_nvmlGpmSample_t)

    @api
    def nvmlGpmSampleFree(sample: Any) -> None:
        samples.pop(_addr(sample))

    def take(sample: Any, gpu: int, gi: int | None) -> Any:
        if not (gpu < nsim() and sim.models[gpu].has_gpm):
            raise err(real.NVML_ERROR_NOT_SUPPORTED)
        act = call(sim.activity, gpu, gi)
        samples[_addr(sample)] = {k: getattr(act, k) for k in metric_fields.values()}
        return sample

    @api
    def nvmlGpmSampleGet(h: Device, sample: Any) -> Any:
        return take(sample, h.gpu, None)

    @api
    def nvmlGpmMigSampleGet(h: Device, gi: int, sample: Any) -> Any:
        return take(sample, h.gpu, gi)

    @api
    def nvmlGpmMetricsGet(req: Any) -> Any:
        if req.version != real.NVML_GPM_METRICS_GET_VERSION:
            raise err(real.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        first, second = samples.get(_addr(req.sample1)), samples.get(_addr(req.sample2))
        if first is None or second is None:
            raise err(real.NVML_ERROR_INVALID_ARGUMENT)
        for i in range(req.numMetrics):
            field = metric_fields.get(req.metrics[i].metricId)
            if field is None or second[field] is None:
                req.metrics[i].nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
            else:
                req.metrics[i].nvmlReturn = real.NVML_SUCCESS
                req.metrics[i].value = second[field]  # the simulator reports the window's value directly
        return req

    # --- the device counters dcgm-exporter reads (from the simulator's Health), with NVML's types and codes
    def reading(h: Device, field: str) -> Any:
        if h.gpu >= nsim():
            raise err(real.NVML_ERROR_NOT_SUPPORTED)
        value = getattr(sim.health(h.gpu), field)
        if value is None:
            raise err(real.NVML_ERROR_NOT_SUPPORTED)
        return value

    @api
    def nvmlSystemGetDriverVersion() -> str:
        return sim.driver_version()

    @api
    def nvmlDeviceGetTemperature(h: Device, sensor: int) -> int:
        if sensor != real.NVML_TEMPERATURE_GPU:
            raise err(real.NVML_ERROR_INVALID_ARGUMENT)
        return int(reading(h, "gpu_temp"))

    pcie_bytes: dict[tuple[int, str], tuple[float, float]] = {}  # (gpu, field) -> (when, bytes counted so far)

    def pcie_count(h: Device, field: str) -> int:
        """The driver's PCIe byte counter: the simulated rate, accumulated over time."""
        import time

        now = time.monotonic()
        at, total = pcie_bytes.get((h.gpu, field), (now, 0.0))
        total += reading(h, field) * (now - at)
        pcie_bytes[(h.gpu, field)] = (now, total)
        return int(total)

    @api
    def nvmlDeviceGetFieldValues(h: Device, field_ids: list[int]) -> Any:
        names = {
            real.NVML_FI_DEV_MEMORY_TEMP: "memory_temp",
            real.NVML_FI_DEV_NVLINK_BANDWIDTH_C0_TOTAL: "nvlink_bandwidth",
        }
        counters = {
            real.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: "pcie_tx_bytes",
            real.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: "pcie_rx_bytes",
        }
        out = (real.c_nvmlFieldValue_t * len(field_ids))()
        for i, fid in enumerate(field_ids):
            out[i].fieldId = fid
            try:
                if fid in names:
                    value = reading(h, names[fid])
                else:
                    value = pcie_count(h, counters[fid]) if fid in counters else None
            except real.NVMLError:
                value = None
            if value is None:
                out[i].nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
                continue
            out[i].nvmlReturn = real.NVML_SUCCESS
            out[i].valueType = real.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
            out[i].value.ullVal = int(value)
        return out

    @api
    def nvmlDeviceGetPowerUsage(h: Device) -> int:
        return int(reading(h, "power_w") * 1000)  # mW

    @api
    def nvmlDeviceGetTotalEnergyConsumption(h: Device) -> int:
        return int(reading(h, "energy_mj"))

    @api
    def nvmlDeviceGetClockInfo(h: Device, kind: int) -> int:
        fields = {real.NVML_CLOCK_SM: "sm_clock_mhz", real.NVML_CLOCK_MEM: "mem_clock_mhz"}
        if kind not in fields:
            raise err(real.NVML_ERROR_NOT_SUPPORTED)
        return int(reading(h, fields[kind]))

    @api
    def nvmlDeviceGetUtilizationRates(h: Device) -> Any:
        u = real.c_nvmlUtilization_t()
        u.gpu, u.memory = int(reading(h, "gpu_util")), int(reading(h, "mem_copy_util"))
        return u

    @api
    def nvmlDeviceGetEncoderUtilization(h: Device) -> list[int]:
        return [int(reading(h, "enc_util")), 167000]

    @api
    def nvmlDeviceGetDecoderUtilization(h: Device) -> list[int]:
        return [int(reading(h, "dec_util")), 167000]

    @api
    def nvmlDeviceGetPcieReplayCounter(h: Device) -> int:
        return int(reading(h, "pcie_replays"))

    @api
    def nvmlDeviceGetPcieThroughput(h: Device, counter: int) -> int:
        field = "pcie_tx_bytes" if counter == real.NVML_PCIE_UTIL_TX_BYTES else "pcie_rx_bytes"
        return int(reading(h, field) / 1024)  # KB/s

    @api
    def nvmlDeviceGetRemappedRows(h: Device) -> list[int]:
        corr, unc = reading(h, "rows_remapped_correctable"), reading(h, "rows_remapped_uncorrectable")
        return [int(corr), int(unc), 0, int(reading(h, "row_remap_failure"))]

    # --- XID errors through an NVML event set
    events: dict[int, list[tuple[int, int]]] = {}

    @api
    def nvmlEventSetCreate() -> Any:
        events[len(events) + 1] = []
        return ctypes.cast(ctypes.c_void_p(0x9000 + len(events)), real.c_nvmlEventSet_t)

    @api
    def nvmlDeviceRegisterEvents(h: Device, kinds: int, event_set: Any) -> None:
        if h.gpu >= nsim():
            raise err(real.NVML_ERROR_NOT_SUPPORTED)

    @api
    def nvmlEventSetWait_v2(event_set: Any, timeout_ms: int) -> Any:
        pending = events[_addr(event_set) - 0x9000]
        pending.extend(sim.xid_events())
        if not pending:
            raise err(real.NVML_ERROR_TIMEOUT)
        gpu, xid = pending.pop(0)
        return types.SimpleNamespace(device=Device(gpu), eventType=real.nvmlEventTypeXidCriticalError, eventData=xid)

    @api
    def nvmlEventSetFree(event_set: Any) -> None:
        events.pop(_addr(event_set) - 0x9000, None)

    return m
