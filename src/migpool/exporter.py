"""Prometheus metrics, built with prometheus-client from a Sampler's latest snapshot (a scrape reads no GPU).

Where a figure means what a dcgm-exporter metric means, it has that metric's name and labels (gpu, UUID,
device, modelName, Hostname, and GPU_I_PROFILE / GPU_I_ID for a MIG instance), so existing Grafana dashboards
work unchanged; the rest are `migpool_*`. The README lists every metric.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .errors import MigpoolError
from .pool.stats import BUCKETS
from .telemetry import GpuSample, PartitionSample, Sampler, Snapshot

DCGM_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "GPU_I_PROFILE", "GPU_I_ID"]
# dcgm-exporter's profiling fields are ratios (0..1); NVML GPM reports percent
ACTIVITY = {
    "sm_active": ("DCGM_FI_PROF_SM_ACTIVE", "Ratio of cycles an SM has at least one warp assigned (NVML GPM)."),
    "sm_occupancy": ("DCGM_FI_PROF_SM_OCCUPANCY", "Ratio of resident warps to the maximum (NVML GPM)."),
    "tensor_active": ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles any tensor pipe is active (NVML GPM)."),
    "dram_active": ("DCGM_FI_PROF_DRAM_ACTIVE", "Ratio of cycles the memory interface is active (NVML GPM)."),
    "graphics_active": (
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "Ratio of time the graphics/compute engine is active (NVML GPM).",
    ),
}
POOL_LABELS = ["pool", "worker", "partition", "GPU_I_PROFILE", "gpu", "GPU_I_ID", "Hostname"]


def _labels(snap: Snapshot, g: GpuSample, p: PartitionSample | None) -> list[str]:
    return [
        str(g.index),
        g.uuid,
        f"nvidia{g.index}",
        g.name,
        snap.hostname,
        p.profile if p else "",
        str(p.gi_id) if p else "",
    ]


class SnapshotCollector(Collector):
    """Turns the sampler's latest snapshot into metric families at each scrape."""

    def __init__(self, sampler: Sampler, process_metrics: bool = False) -> None:
        self.sampler = sampler
        self.process_metrics = process_metrics

    def collect(self) -> Iterator[Metric]:
        snap = self.sampler.latest()
        if self.sampler.pools is not None:  # pool counters are cheap to read: always current
            snap = dataclasses.replace(snap, pools=list(self.sampler.pools()))
        yield from families(snap, self.process_metrics)


def families(snap: Snapshot, process_metrics: bool = False) -> Iterator[Metric]:
    """Every series of the snapshot; `process_metrics` adds one per process (its PID, user and command name,
    which anyone who can scrape the port then learns: opt-in, `migpool metrics --process-metrics`)."""
    used = GaugeMetricFamily("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels=DCGM_LABELS)
    free = GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=DCGM_LABELS)
    act = {k: GaugeMetricFamily(name, text, labels=DCGM_LABELS) for k, (name, text) in ACTIVITY.items()}
    info = GaugeMetricFamily(
        "migpool_partition_info",
        "A MIG partition of the layout (value 1).",
        labels=DCGM_LABELS + ["CI_ID", "placement", "MIG_UUID"],
    )
    nprocs = GaugeMetricFamily(
        "migpool_partition_processes", "Compute processes on the partition (or whole GPU).", labels=DCGM_LABELS
    )
    pmem = GaugeMetricFamily(
        "migpool_process_fb_used",
        "Framebuffer memory a process uses (in MiB).",
        labels=DCGM_LABELS + ["pid", "user", "name"],
    )
    for g in snap.gpus:
        units: list[tuple[PartitionSample | None, int, int, Any, list[Any]]] = [
            (p, p.memory_used_mib, p.memory_mib, p.activity, p.processes) for p in g.partitions
        ]
        if not g.partitions:
            units.append((None, g.memory_used_mib, g.memory_mib, g.activity, g.processes))
        for p, mem_used, mem_total, activity, procs in units:
            labels = _labels(snap, g, p)
            used.add_metric(labels, mem_used)
            free.add_metric(labels, max(0, mem_total - mem_used))
            nprocs.add_metric(labels, len(procs))
            for proc in procs if process_metrics else ():
                pmem.add_metric(labels + [str(proc.pid), proc.user, proc.name], proc.memory_mib)
            if activity is not None:
                for k, fam in act.items():
                    value = getattr(activity, k)
                    if value is not None:
                        fam.add_metric(labels, value / 100.0)
            if p is not None:
                info.add_metric(labels + [str(p.ci_id), p.placement, p.uuid], 1)
    yield from (used, free, *act.values(), info, nprocs, *([pmem] if process_metrics else []))
    yield from pool_families(snap.pools, snap.hostname)
    cost = GaugeMetricFamily("migpool_sample_seconds", "Time the last reading of every GPU took.")
    cost.add_metric([], snap.sample_seconds)
    yield cost


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


def registry_for(sampler: Sampler, process_metrics: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(sampler, process_metrics))
    return registry


def serve(sampler: Sampler, port: int, addr: str = "0.0.0.0", process_metrics: bool = False) -> Any:
    """Serve /metrics on `port` in a background thread; returns the server (call .shutdown() to stop). Like
    dcgm-exporter it listens on every interface unless `addr` names one."""
    from prometheus_client import start_http_server

    if not 0 < port < 65536:
        raise MigpoolError(f"--port must be between 1 and 65535, not {port}")
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry_for(sampler, process_metrics))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise MigpoolError(
                f"port {port} is already in use (another exporter, such as dcgm-exporter, may listen "
                "there); choose another with --port"
            ) from None
        raise MigpoolError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}") from None
    return server
