"""Prometheus metrics, built with prometheus-client from a Sampler's latest snapshot (a scrape reads no GPU).

The GPU series are NVIDIA dcgm-exporter's: its default counters with its names, types, units and labels (gpu,
UUID, pci_bus_id, device, modelName, GPU_I_PROFILE, GPU_I_ID, Hostname, DCGM_FI_DRIVER_VERSION), laid out as it
lays them out: one series per GPU, except on a GPU with MIG enabled and GPU instances, which has one series per
GPU instance (the GPU's own readings, such as its temperature, repeated on each, as DCGM reports them), so that
its Grafana dashboard and alert rules work unchanged. What NVML cannot read on a GPU (the utilization fields with
MIG enabled; GPM profiling before Hopper) has no series, and the metric's HELP says why. The rest are `migpool_*`.
docs/metrics.md lists every metric.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import socketserver
import threading
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ..backend.base import Activity, Health
from ..errors import MigpoolError
from ..mig.catalog import ProfileName
from . import holders
from .poolstats import BUCKETS
from .telemetry import GpuSample, PartitionSample, Proc, Sampler, Snapshot

HOSTNAME_LABELS = ("Hostname", "hostname")  # dcgm-exporter's released spelling, and its main branch's


def dcgm_labels(hostname_label: str = "Hostname") -> list[str]:
    return [
        "gpu",
        "UUID",
        "pci_bus_id",
        "device",
        "modelName",
        "GPU_I_PROFILE",
        "GPU_I_ID",
        hostname_label,
        "DCGM_FI_DRIVER_VERSION",
    ]


# dcgm-exporter's default counters that NVML gives: (name, Prometheus type, Health field, help)
DEVICE_COUNTERS = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "sm_clock_mhz", "SM clock (MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "mem_clock_mhz", "Memory clock (MHz)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "memory_temp", "Memory temperature (degrees C)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "gpu_temp", "GPU temperature (degrees C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "power_w", "Power drawn (W)."),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "energy_mj", "Energy used since the driver loaded (mJ)."),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "pcie_replays", "PCIe retries."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "gpu_util", "Share of time a kernel ran (%); not reported with MIG enabled."),
    (
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "gauge",
        "mem_copy_util",
        "Share of time memory was read or written (%); not reported with MIG enabled.",
    ),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "enc_util", "Video encoder use (%); not reported with MIG enabled."),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "dec_util", "Video decoder use (%); not reported with MIG enabled."),
    ("DCGM_FI_DEV_FB_RESERVED", "gauge", "fb_reserved_mib", "Framebuffer memory the driver reserves (MiB)."),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter", "nvlink_bandwidth", "NVLink traffic counter, all lanes."),
    (
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "rows_remapped_uncorrectable",
        "Memory rows remapped after uncorrectable errors.",
    ),
    (
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "counter",
        "rows_remapped_correctable",
        "Memory rows remapped after correctable errors.",
    ),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "row_remap_failure", "1 where a row remapping failed."),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "pcie_tx_bytes", "PCIe bytes sent per second (NVML, 20 ms window)."),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "pcie_rx_bytes", "PCIe bytes received per second (NVML, 20 ms window)."),
)
# dcgm-exporter's profiling fields are ratios (0..1); NVML GPM reports percent, per GPU or GPU instance
ACTIVITY = {
    "graphics_active": ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics/compute engine is active."),
    "tensor_active": ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles any tensor pipe is active."),
    "dram_active": ("DCGM_FI_PROF_DRAM_ACTIVE", "Ratio of cycles the memory interface is active."),
    "sm_active": ("DCGM_FI_PROF_SM_ACTIVE", "Ratio of cycles an SM has at least one warp assigned."),
    "sm_occupancy": ("DCGM_FI_PROF_SM_OCCUPANCY", "Ratio of resident warps to the maximum."),
}
GPM_NOTE = " From NVML GPM (Hopper and later); n/a on older GPUs (A100: needs DCGM's profiling module)."
POOL_LABELS = ["pool", "worker", "partition", "GPU_I_PROFILE", "gpu", "GPU_I_ID", "Hostname"]


@cache
def xid_texts() -> dict[int, str]:
    """What each XID error means, as dcgm-exporter labels it (err_msg)."""
    raw = json.loads(resources.files("migpool.mig").joinpath("data/xid.json").read_text())
    return {int(k): v for k, v in raw["xid"].items()}


@dataclasses.dataclass(frozen=True)
class _Unit:
    """What one dcgm-exporter series stands for: a whole GPU, or one GPU instance of a MIG GPU."""

    gpu: GpuSample
    gi_id: int | None
    gi_profile: str
    memory_used_mib: int
    memory_mib: int
    activity: Activity | None
    processes: list[Proc]
    uuids: list[str]  # the devices it stands for: its compute instances, or the GPU


def _units(g: GpuSample) -> list[_Unit]:
    """dcgm-exporter's 'flex' layout: a GPU with MIG enabled and GPU instances is its GPU instances; any other GPU
    is itself. The compute instances of one GPU instance are one unit (they share its memory and counters)."""
    by_gi: dict[int, list[PartitionSample]] = {}
    for p in g.partitions:
        by_gi.setdefault(p.gi_id, []).append(p)
    if not by_gi:
        return [_Unit(g, None, "", g.memory_used_mib, g.memory_mib, g.activity, g.processes, [g.uuid])]
    units = []
    for gi_id, parts in sorted(by_gi.items()):
        first = parts[0]
        parsed = ProfileName.parse(first.profile)
        procs = [proc for p in parts for proc in p.processes]
        units.append(
            _Unit(
                g,
                gi_id,
                str(parsed.gi) if parsed else first.profile,
                first.memory_used_mib,
                first.memory_mib,
                first.activity,
                procs,
                [p.uuid for p in parts],
            )
        )
    return units


class SnapshotCollector(Collector):
    """Turns the sampler's latest snapshot into metric families at each scrape."""

    def __init__(self, sampler: Sampler, process_metrics: bool = False, hostname_label: str = "Hostname") -> None:
        self.sampler = sampler
        self.process_metrics = process_metrics
        self.hostname_label = hostname_label

    def collect(self) -> Iterator[Metric]:
        snap = self.sampler.latest()
        if self.sampler.pools is not None:  # pool counters are cheap to read: always current
            snap = dataclasses.replace(snap, pools=list(self.sampler.pools()))
        yield from families(snap, self.process_metrics, self.hostname_label)


def _family(name: str, kind: str, doc: str, labels: list[str]) -> Metric:
    """A family whose samples keep dcgm-exporter's names: its counters have no `_total` suffix."""
    if kind == "gauge":
        return GaugeMetricFamily(name, doc, labels=labels)
    return Metric(name, doc, "counter")


def _add(fam: Metric, labels: list[str], names: list[str], value: float) -> None:
    if isinstance(fam, GaugeMetricFamily):
        fam.add_metric(labels, value)
    else:
        fam.add_sample(fam.name, dict(zip(names, labels, strict=True)), value)


def _why_missing(snap: Snapshot, field: str) -> str:
    """The reasons this snapshot's GPUs gave for not reporting `field`, for the metric's HELP."""
    reasons = sorted(
        {f"GPU {g.index}: {why}" for g in snap.gpus if g.health for f, why in g.health.missing if f == field}
        | {f"GPU {g.index}: {g.health_note}" for g in snap.gpus if g.health is None}
    )
    return (" n/a here: " + "; ".join(reasons) + ".") if reasons else ""


def families(snap: Snapshot, process_metrics: bool = False, hostname_label: str = "Hostname") -> Iterator[Metric]:
    """Every series of the snapshot; `process_metrics` adds one per process (its PID, user and command name,
    which anyone who can scrape the port then learns: opt-in, `migpool metrics --process-metrics`)."""
    if hostname_label not in HOSTNAME_LABELS:
        raise MigpoolError(f"the hostname label is spelled {' or '.join(HOSTNAME_LABELS)}, not {hostname_label!r}")
    names = dcgm_labels(hostname_label) + _holder_names(snap)
    used = GaugeMetricFamily("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (MiB).", labels=names)
    free = GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (MiB).", labels=names)
    device = {
        field: _family(name, kind, doc + _why_missing(snap, field), names) for name, kind, field, doc in DEVICE_COUNTERS
    }
    gpm_missing = sorted(
        {
            f"GPU {g.index}: {g.activity_note}"
            for g in snap.gpus
            if g.activity is None and not g.partitions and g.activity_note
        }
    )
    gpm_help = GPM_NOTE + (" n/a here: " + "; ".join(gpm_missing) + "." if gpm_missing else "")
    act = {k: GaugeMetricFamily(name, text + gpm_help, labels=names) for k, (name, text) in ACTIVITY.items()}
    xid = GaugeMetricFamily(
        "DCGM_FI_DEV_XID_ERRORS",
        "The last XID error the GPU reported (0: none), from NVML events.",
        labels=[*names, "err_code", "err_msg"],
    )
    for g in snap.gpus:
        health = g.health or Health()
        for u in _units(g):
            labels = [
                str(g.index),
                g.uuid,
                g.pci_bus_id,
                f"nvidia{g.index}",
                g.name,
                u.gi_profile,
                "" if u.gi_id is None else str(u.gi_id),
                snap.hostname,
                snap.driver,
                *_holder_values(snap, u.uuids),
            ]
            used.add_metric(labels, u.memory_used_mib)
            free.add_metric(labels, max(0, u.memory_mib - u.memory_used_mib))
            for field, fam in device.items():
                value = getattr(health, field)
                if value is not None:
                    _add(fam, labels, names, value)
            xid.add_metric([*labels, str(g.xid), xid_texts().get(g.xid, "Unknown Error")], g.xid)
            if u.activity is not None:
                for k, fam in act.items():
                    value = getattr(u.activity, k)
                    if value is not None:
                        fam.add_metric(labels, value / 100.0)
    yield from (used, free, *device.values(), xid, *act.values())
    yield from partition_families(snap, dcgm_labels(hostname_label), process_metrics)
    cost = GaugeMetricFamily("migpool_sample_seconds", "Time the last reading of every GPU took.")
    cost.add_metric([], snap.sample_seconds)
    yield cost
    yield from pool_families(snap.pools, snap.hostname)


def _holder_names(snap: Snapshot) -> list[str]:
    return list(holders.LABELS) if snap.holders is not None else []


def _holder_values(snap: Snapshot, uuids: list[str]) -> list[str]:
    """The holder labels' values for a series of these devices ([] where holders were not asked for)."""
    if snap.holders is None:
        return []
    return holders.label_values(snap.holders.get(u, holders.NOBODY) for u in uuids)


def partition_families(snap: Snapshot, names: list[str], process_metrics: bool) -> Iterator[Metric]:
    """migpool's own series per MIG device (a compute instance: CI_ID and MIG_UUID tell siblings apart), or per
    whole GPU: the layout, processes, and (opt-in) each process's memory."""
    extra = ["CI_ID", "placement", "MIG_UUID", *_holder_names(snap)]
    info = GaugeMetricFamily("migpool_partition_info", "A MIG device of the layout (value 1).", labels=names + extra)
    nprocs = GaugeMetricFamily(
        "migpool_partition_processes", "Compute processes on the MIG device (or whole GPU).", labels=names + extra
    )
    pmem = GaugeMetricFamily(
        "migpool_process_fb_used",
        "Framebuffer memory a process uses (MiB).",
        labels=names + extra + ["pid", "user", "name"],
    )
    for g in snap.gpus:
        base = [str(g.index), g.uuid, g.pci_bus_id, f"nvidia{g.index}", g.name]
        rows: list[tuple[list[str], list[Proc]]] = []
        for p in g.partitions:
            parsed = ProfileName.parse(p.profile)
            gi = str(parsed.gi) if parsed else p.profile
            labels = [*base, gi, str(p.gi_id), snap.hostname, snap.driver, str(p.ci_id), p.placement, p.uuid]
            labels += _holder_values(snap, [p.uuid])
            info.add_metric(labels, 1)
            rows.append((labels, p.processes))
        if not g.partitions:
            whole = [*base, "", "", snap.hostname, snap.driver, "", "", "", *_holder_values(snap, [g.uuid])]
            rows.append((whole, g.processes))
        for labels, procs in rows:
            nprocs.add_metric(labels, len(procs))
            for proc in procs if process_metrics else ():
                pmem.add_metric(labels + [str(proc.pid), proc.user, proc.name], proc.memory_mib)
    yield from (info, nprocs, *([pmem] if process_metrics else []))


def pool_families(pools: list[dict[str, Any]], hostname: str) -> Iterator[Metric]:
    names = {
        "started": "Tasks sent to the worker",
        "finished": "Tasks that returned a result",
        "failed": "Tasks that raised an exception",
        "lost": "Tasks whose worker died or that timed out",
    }
    counters = {
        k: CounterMetricFamily(f"migpool_tasks_{k}", f"{text}.", labels=POOL_LABELS) for k, text in names.items()
    }
    busy = CounterMetricFamily(
        "migpool_worker_busy_seconds", "Seconds the worker spent running tasks.", labels=POOL_LABELS
    )
    running = GaugeMetricFamily("migpool_worker_tasks_running", "Tasks running on the worker now.", labels=POOL_LABELS)
    queued = GaugeMetricFamily("migpool_worker_tasks_queued", "Tasks sent to the worker, waiting.", labels=POOL_LABELS)
    pending = GaugeMetricFamily(
        "migpool_pool_tasks_pending", "Tasks not yet sent to a worker.", labels=["pool", "Hostname"]
    )
    hist = HistogramMetricFamily("migpool_task_duration_seconds", "Task run time on the worker.", labels=POOL_LABELS)
    for pool in pools:
        pid = str(pool["pid"])
        pending.add_metric([pid, hostname], pool["pending"])
        for w in pool["workers"]:
            labels = [
                pid,
                str(w["worker"]),
                w["partition"] or "",
                w["profile"] or "",
                "" if w["gpu"] is None else str(w["gpu"]),
                "" if w["gi_id"] is None else str(w["gi_id"]),
                hostname,
            ]
            counters["started"].add_metric(labels, w["tasks_started"])
            counters["finished"].add_metric(labels, w["tasks_done"])
            counters["failed"].add_metric(labels, w["tasks_failed"])
            counters["lost"].add_metric(labels, w["tasks_lost"])
            busy.add_metric(labels, w["busy_s"])
            running.add_metric(labels, w["running"])
            queued.add_metric(labels, w["queued"])
            cumulative, acc = [], 0
            for bound, n in zip([*map(str, BUCKETS), "+Inf"], w["buckets"], strict=False):
                acc += n
                cumulative.append((bound, acc))
            hist.add_metric(labels, cumulative, w["duration_sum"])
    yield from (*counters.values(), busy, running, queued, pending, hist)


def registry_for(
    sampler: Sampler, process_metrics: bool = False, hostname_label: str = "Hostname"
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(sampler, process_metrics, hostname_label))
    return registry


class Scrapes:
    """What each scrape answers, in the text format: the GPU series of a snapshot are rendered once, when the
    sampler has a new one (a scrape of 8 GPUs × 7 partitions then costs what the pool counters cost); the pool
    counters are rendered at every scrape, always current."""

    def __init__(self, sampler: Sampler, process_metrics: bool = False, hostname_label: str = "Hostname") -> None:
        self.sampler = sampler
        self.process_metrics = process_metrics
        self.hostname_label = hostname_label
        self._snap: Snapshot | None = None
        self._gpus = b""
        self._labels_text: dict[tuple[tuple[str, str], ...], str] = {}
        self._lock = threading.Lock()

    def body(self) -> bytes:
        snap = self.sampler.latest()
        with self._lock:
            if snap is not self._snap:
                gpu_side = dataclasses.replace(snap, pools=[])
                if len(self._labels_text) > LABEL_TEXTS_KEPT:  # (label sets of partitions and holders long gone)
                    self._labels_text.clear()
                found = list(families(gpu_side, self.process_metrics, self.hostname_label))
                self._gpus = _text(found, self._labels_text)
                self._snap = snap
            gpus = self._gpus
        pools = list(self.sampler.pools()) if self.sampler.pools is not None else snap.pools
        return gpus + _text(list(pool_families(pools, snap.hostname))) if pools else gpus


LABEL_TEXTS_KEPT = 20_000  # label sets whose text a Scrapes keeps between snapshots (then it starts afresh)


def _text(found: list[Metric], labels_text: dict[tuple[tuple[str, str], ...], str] | None = None) -> bytes:
    """These families in the text format, as `exposition` writes them (tests check that the two agree), faster: a
    label set that many families share (a GPU instance's, on each of its ~30 series) is escaped once, and with
    `labels_text` (kept by the caller) once for as long as it stays the same (a partition's, its holder's)."""
    dcgm_counters = {name for name, kind, _, _ in DEVICE_COUNTERS if kind == "counter"}
    if labels_text is None:
        labels_text = {}
    out: list[str] = []
    for m in found:
        mtype = {"unknown": "untyped", "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}.get(
            m.type, m.type
        )
        mname = m.name + ("_total" if m.type == "counter" and m.name not in dcgm_counters else "")
        doc = m.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {mname} {doc}\n# TYPE {mname} {mtype}\n")
        for sample in m.samples:
            key = tuple(sample.labels.items())
            text = labels_text.get(key)
            if text is None:
                pairs = (f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
                text = labels_text[key] = "{" + ",".join(pairs) + "}" if sample.labels else ""
            out.append(f"{sample.name}{text} {floatToGoString(sample.value)}\n")
    return "".join(out).encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format, with dcgm-exporter's counters named as it names them (the client
    library writes a counter's HELP and TYPE as `<name>_total`; dcgm-exporter's samples have no suffix)."""
    text = generate_latest(registry).decode()
    for name, kind, _, _ in DEVICE_COUNTERS:
        if kind == "counter":
            text = text.replace(f"# HELP {name}_total ", f"# HELP {name} ").replace(
                f"# TYPE {name}_total counter", f"# TYPE {name} counter"
            )
    return text.encode()


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # (one per scrape, each answered at once)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape."""


class MetricsServer:
    """/metrics over HTTP from one thread of its own, which `shutdown()` stops and joins."""

    def __init__(self, scrapes: Scrapes, port: int, addr: str) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"only /metrics is served here\n"]
            body = scrapes.body()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return [body]

        self.httpd = make_server(addr, port, app, _Server, handler_class=_Quiet)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="migpool-metrics", daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def serve(
    sampler: Sampler, port: int, addr: str = "0.0.0.0", process_metrics: bool = False, hostname_label: str = "Hostname"
) -> MetricsServer:
    """Serve /metrics on `port` (call .shutdown() to stop). Like dcgm-exporter it listens on every interface
    unless `addr` names one."""
    if not 0 < port < 65536:
        raise MigpoolError(f"--port must be between 1 and 65535, not {port}")
    try:
        return MetricsServer(Scrapes(sampler, process_metrics, hostname_label), port, addr)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise MigpoolError(
                f"port {port} is already in use (another exporter, such as dcgm-exporter, may listen "
                "there); choose another with --port"
            ) from None
        raise MigpoolError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}") from None
