"""Per-GPU and per-partition telemetry straight from NVML (or the simulator), no DCGM.

A `Sampler` reads every GPU once per interval in a background thread: layout, memory, processes (PID, user,
name, memory) and activity (NVML GPM on Hopper and later: SM activity, SM occupancy, tensor and DRAM
activity, per GPU instance). `migpool top` and the Prometheus exporter read its latest `Snapshot`, so a
screen refresh or a scrape costs no driver call. Where a figure cannot be read, the snapshot says why.
"""

from __future__ import annotations

import os
import pwd
import socket
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..backend.base import Activity, Backend, Health, MigInstance, ProcessInfo
from ..errors import BackendError
from . import holders as holding
from .holders import Holder


@dataclass(frozen=True)
class Proc:
    pid: int
    user: str
    name: str
    memory_mib: int


@dataclass(frozen=True)
class PartitionSample:
    gi_id: int
    ci_id: int
    uuid: str
    profile: str
    placement: str
    memory_used_mib: int
    memory_mib: int
    activity: Activity | None
    activity_note: str | None  # why activity is missing
    processes: list[Proc]

    @classmethod
    def of(
        cls, instance: MigInstance, activity: Activity | None, activity_note: str | None, processes: list[Proc]
    ) -> PartitionSample:
        """A MIG instance as the driver reports it, with what was read of its use."""
        return cls(
            instance.gi_id,
            instance.ci_id,
            instance.uuid,
            instance.profile_name,
            str(instance.placement),
            instance.memory_used_mib,
            instance.memory_mib,
            activity,
            activity_note,
            processes,
        )


@dataclass(frozen=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    mig_mode: str
    memory_used_mib: int
    memory_mib: int
    activity: Activity | None
    activity_note: str | None
    processes: list[Proc]  # on the whole GPU (MIG disabled) or outside any partition
    partitions: list[PartitionSample]
    health: Health | None = None  # temperatures, power, clocks, utilization, error counters
    health_note: str | None = None  # why health is missing
    pci_bus_id: str = ""
    xid: int = 0  # the last XID error seen on it (0: none)


@dataclass(frozen=True)
class Snapshot:
    time: float
    hostname: str
    backend: str
    gpus: list[GpuSample]
    pools: list[dict[str, Any]] = field(default_factory=list)
    sample_seconds: float = 0.0  # what reading the GPUs took
    driver: str = ""  # the driver's version
    holders: dict[str, Holder] | None = None  # device UUID -> who holds it (None: not asked for; holders.py)
    holders_note: str | None = None  # why some holders' labels are missing (the kubelet could not be read)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _user(pid: int) -> str:
    try:
        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return "?"


def _procs(procs: list[ProcessInfo]) -> list[Proc]:
    return [Proc(p.pid, _user(p.pid), p.name, p.used_memory_mib) for p in procs]


def _activity(backend: Backend, gpu: int, gi_id: int | None) -> tuple[Activity | None, str | None]:
    try:
        got = backend.activity(gpu, gi_id)
    except BackendError as e:
        return None, str(e)
    return got, None if got is not None else "warming up: the first sample opens the window"


def _health(backend: Backend, gpu: int) -> tuple[Health | None, str | None]:
    try:
        return backend.health(gpu), None
    except BackendError as e:
        return None, str(e)


def sample(backend: Backend, pools: list[dict[str, Any]] | None = None, xid: dict[int, int] | None = None) -> Snapshot:
    """Read every GPU once (activity covers the time since the previous call). `xid`: the last XID error of each
    GPU, kept by the caller across samples (updated here from the XID events since the previous call)."""
    t0 = time.perf_counter()
    last = xid if xid is not None else {}
    try:
        for gpu, code in backend.xid_events():
            last[gpu] = code
    except BackendError:
        pass
    gpus = []
    for g in backend.gpus():
        procs = backend.processes(g.index)
        parts = []
        if g.mig_current:
            per_gi: dict[int, tuple[Activity | None, str | None]] = {}
            for d in backend.mig_devices(g.index):
                if d.gi_id not in per_gi:  # one GPM window per GPU instance, whatever its compute instances
                    per_gi[d.gi_id] = _activity(backend, g.index, d.gi_id)
                act, note = per_gi[d.gi_id]
                parts.append(PartitionSample.of(d, act, note, _procs([p for p in procs if p.device_uuid == d.uuid])))
            act, note = None, "per partition (MIG is enabled)"
        else:
            act, note = _activity(backend, g.index, None)
        inside = {p.uuid for p in parts}
        health, health_note = _health(backend, g.index)
        gpus.append(
            GpuSample(
                g.index,
                g.uuid,
                g.name,
                g.mig_mode_short,
                backend.memory_used_mib(g.index),
                g.memory_mib,
                act,
                note,
                _procs([p for p in procs if p.device_uuid not in inside]),
                parts,
                health,
                health_note,
                g.pci_bus_id,
                last.get(g.index, 0),
            )
        )
    try:
        driver = backend.driver_version()
    except BackendError:
        driver = ""
    return Snapshot(
        time.time(), socket.gethostname(), backend.kind, gpus, pools or [], time.perf_counter() - t0, driver
    )


def with_holders(backend: Backend, snap: Snapshot) -> Snapshot:
    """The snapshot with who holds each of its partitions (and whole GPUs) read now."""
    uuids = [p.uuid for g in snap.gpus for p in g.partitions] + [g.uuid for g in snap.gpus if not g.partitions]
    pods, note = holding.pod_devices()
    found = holding.read(backend.state_dirs().leases(write=False), uuids, snap.pools, pods)
    return replace(snap, holders=found, holders_note=note)


class Sampler:
    """Samples in a background thread every `interval` seconds; `latest()` is the newest snapshot."""

    def __init__(self, backend: Backend, interval: float = 1.0, pools: Any = None, holders: bool = False) -> None:
        if not interval > 0:
            raise ValueError(f"the sampling interval must be a positive number of seconds, not {interval}")
        self.backend = backend
        self.interval = interval
        self.pools = pools  # a callable giving the pools' stats, or None
        self.holders = holders  # read who holds each partition at each sample (holders.py)
        self._latest: Snapshot | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._backend_lock = threading.Lock()
        self._stop = threading.Event()
        self._fresh = threading.Event()
        self._xid: dict[int, int] = {}  # the last XID error of each GPU, across samples
        self._thread = threading.Thread(target=self._run, name="migpool-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._take()  # opens the activity window
        self._thread.start()

    def _take(self) -> None:
        try:
            with self._backend_lock:
                snap = sample(self.backend, list(self.pools()) if self.pools else [], self._xid)
                if self.holders:
                    snap = with_holders(self.backend, snap)
        except BaseException as e:  # noqa: BLE001 - shown to the reader, never lost
            with self._lock:
                self._error = e
            return
        with self._lock:
            self._latest, self._error = snap, None
        self._fresh.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def latest(self, wait: float = 0.0) -> Snapshot:
        """The newest snapshot (waiting up to `wait` s for the first full one); raises what sampling raised."""
        if wait:
            self._fresh.clear()
            self._fresh.wait(wait)
        with self._lock:
            if self._error is not None:
                raise self._error
            assert self._latest is not None
            return self._latest

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
