"""What the GPUs hold now, as the reconciler reads it: GPU instances with their compute instances and MIG
devices, the GPUs a selection names, and which partitions another holder leases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..backend.base import Backend, GpuInfo, ProcessInfo
from ..errors import NotFoundError
from ..host.journal import InstanceRecord
from ..host.leases import LeaseHolder, Leases, holders
from ..mig.catalog import GpuModel
from ..mig.planner import PlannedInstance


@dataclass(frozen=True)
class Actual:
    """A GPU instance as it is now, with its compute instances (their ids and compute slices) and MIG device
    UUIDs."""

    instance: PlannedInstance
    gi_id: int
    ci_ids: tuple[int, ...]
    uuids: tuple[str, ...]
    ci_slices: tuple[int, ...] = ()
    ci_starts: tuple[int, ...] = ()  # where each compute instance starts in the GPU instance
    ci_uuids: tuple[str, ...] = ()  # each compute instance's MIG device UUID (where the driver lists it)

    @property
    def shape(self) -> tuple[int, ...]:
        """Its compute instances' sizes, largest first (what a layout's GPU instance is compared by)."""
        return tuple(sorted(self.ci_slices, reverse=True))

    @property
    def device_names(self) -> list[str]:
        """The MIG device profile of each of its compute instances (`3g.40gb`, `1c.3g.40gb`, ...)."""
        return [self.instance.profile.compute(c).name for c in self.ci_slices]

    @property
    def record(self) -> InstanceRecord:
        whole = self.ci_slices == (self.instance.profile.slices,)
        return InstanceRecord.of(self.instance, None if whole else self.shape)


def actual_instances(backend: Backend, gpu: int) -> list[Actual]:
    model = backend.model(gpu)
    cis: dict[int, list[tuple[int, int, int]]] = {}
    for c in backend.compute_instances(gpu):
        cis.setdefault(c.gi_id, []).append((c.id, c.slices, c.start))
    uuids: dict[int, list[str]] = {}
    by_ci: dict[tuple[int, int], str] = {}
    for d in backend.mig_devices(gpu):
        uuids.setdefault(d.gi_id, []).append(d.uuid)
        by_ci[(d.gi_id, d.ci_id)] = d.uuid
    return [
        Actual(
            PlannedInstance(model.profile(gi.profile_id), gi.placement),
            gi.id,
            tuple(i for i, _, _ in cis.get(gi.id, ())),
            tuple(uuids.get(gi.id, ())),
            tuple(c for _, c, _ in cis.get(gi.id, ())),
            tuple(at for _, _, at in cis.get(gi.id, ())),
            tuple(by_ci.get((gi.id, i), "") for i, _, _ in cis.get(gi.id, ())),
        )
        for gi in backend.gpu_instances(gpu)
    ]


def device_counts(actual: Sequence[Actual]) -> dict[str, int]:
    """How many MIG devices of each device profile these GPU instances hold."""
    counts: dict[str, int] = {}
    for a in actual:
        for name in a.device_names:
            counts[name] = counts.get(name, 0) + 1
    return counts


def record_counts(model: GpuModel, records: Sequence[InstanceRecord]) -> dict[str, int]:
    """The MIG device counts that journaled GPU instances held (a record without compute instances: whole)."""
    counts: dict[str, int] = {}
    for r in records:
        p = model.profile(r.profile)
        for c in r.cis if r.cis is not None else [p.slices]:
            name = p.compute(c).name
            counts[name] = counts.get(name, 0) + 1
    return counts


def select_gpus(backend: Backend, gpus: Sequence[int | str] | None) -> list[GpuInfo]:
    """Resolve --gpu selections (index or UUID) to GPUs; all GPUs when None."""
    every = backend.gpus()
    if not gpus:
        return every
    out: list[GpuInfo] = []
    for sel in gpus:
        s = str(sel).strip()
        match = [
            g for g in every if (s.isdigit() and g.index == int(s)) or g.uuid == s or g.uuid.removeprefix("GPU-") == s
        ]
        if not match:
            raise NotFoundError(f"no GPU {s!r}; GPUs: " + ", ".join(f"{g.index} ({g.uuid})" for g in every))
        out.extend(m for m in match if m not in out)
    return out


def describe_procs(procs: Sequence[ProcessInfo]) -> str:
    """The processes as refusals name them: PID, name and the device each uses."""
    return "; ".join(f"PID {p.pid} ({p.name}) on {p.device_uuid}" for p in procs)


def leased(backend: Backend, uuids: Sequence[str], mine: Leases | None = None) -> dict[str, LeaseHolder]:
    """Which of these MIG device (or GPU) UUIDs a holder other than `mine` leases now (leases.py)."""
    return holders(backend.state_dirs().leases(write=False), uuids, mine)
