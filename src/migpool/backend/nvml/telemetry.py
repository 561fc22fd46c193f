"""The NVML backend's telemetry: activity from GPM samples, the health counters dcgm-exporter reads by
default, memory in use and XID errors from an NVML event set."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ...errors import BackendError, NotSupportedError
from ..telemetry import Activity, Health, Telemetry
from .session import NvmlSession, decode, error_code


class NvmlTelemetry(NvmlSession, Telemetry):
    """Readings through NVML. It keeps the previous GPM sample of each GPU and GPU instance (activity is the
    change between two), the event set XID errors arrive on, and the previous PCIe byte counts; `close` frees
    them before NVML shuts down."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        super().__init__(nvml)
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
        super().close()

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
                        else f"{decode(n.nvmlDeviceGetName(h))} has no GPM "
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
                why = "not supported by this GPU or driver" if error_code(e) == n.NVML_ERROR_NOT_SUPPORTED else str(e)
                if error_code(e) == n.NVML_ERROR_NOT_SUPPORTED and mig and fields[0].endswith("util"):
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
                if error_code(e) != n.NVML_ERROR_TIMEOUT:
                    raise self._map(e, "read XID events") from None
                return out
            if ev.eventType & n.nvmlEventTypeXidCriticalError:
                key = decode(n.nvmlDeviceGetUUID(ev.device))
                if not index:
                    index = self._uuid_index()
                out.append((index.get(key, -1), int(ev.eventData)))
