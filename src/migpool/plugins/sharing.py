"""What a `mig` plugin that is not exclusive takes of a GPU: the idle partitions of the profiles it wants, then new
ones made beside what is there. Every other partition stays as it is (another holder's, one a process uses, one of
another profile); `mig(exclusive=True)` (`migpool run --exclusive`) makes the whole GPU the pool's instead."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import LayoutError, PluginError
from ..mig.catalog import GpuModel
from ..mig.layout import GpuLayout, Layout, MachineLayout
from ..mig.planner import PlannedInstance, max_devices
from ..mig.planner import plan as place
from ..pool.api.info import Partition

if TYPE_CHECKING:
    from ..backend.base import Backend, MigDeviceInfo
    from ..host.leases import Leases
    from ..pool.api.providers import Node


class ShortageError(PluginError):
    """The GPUs hold fewer partitions of a profile than the pool asks for: `want` asked, `capacity` per GPU (those
    the pool may have), `whole` on the same GPUs emptied (exclusive), `everywhere` with every MIG GPU of the node
    (None when no other GPU could add any)."""

    def __init__(
        self,
        message: str,
        *,
        want: int,
        profile: str,
        capacity: Mapping[int, int],
        whole: int,
        everywhere: int | None,
    ) -> None:
        super().__init__(message)
        self.want = want
        self.profile = profile
        self.capacity = dict(capacity)
        self.whole = whole
        self.everywhere = everywhere


@dataclass(frozen=True)
class GpuRoom:
    """One GPU as a pool that shares it finds it: the partitions there now, and which of them are idle (no other
    holder leases them, no process runs on them), by device profile."""

    gpu: int
    model: GpuModel
    existing: tuple[PlannedInstance, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    idle: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def name(self, profile: str) -> str:
        return self.model.device(profile).name

    def free(self, profile: str) -> int:
        """How many partitions of `profile` can still be made here without touching any other."""
        return max_devices(self.model, profile, self.existing)

    def room(self, profile: str) -> int:
        """How many partitions of `profile` a pool may have here: the idle ones, and as many more as fit."""
        return len(self.idle.get(self.name(profile), ())) + self.free(profile)


def look(backend: Backend, gpu: int, mine: Leases | None = None) -> GpuRoom:
    """GPU `gpu` as it is now; partitions that `mine` leases count as idle (they are the caller's)."""
    from ..reconcile.core import actual_instances, device_counts, leased

    model = backend.model(gpu)
    if not backend.gpu(gpu).mig_current:
        return GpuRoom(gpu, model)
    actual = actual_instances(backend, gpu)
    devices = backend.mig_devices(gpu)
    taken = leased(backend, [d.uuid for d in devices], mine)
    busy = {p.device_uuid for p in backend.processes(gpu)}
    idle: dict[str, tuple[str, ...]] = {}
    for d in devices:
        if d.uuid not in taken and d.uuid not in busy:
            name = model.device(d.profile_name).name
            idle[name] = (*idle.get(name, ()), d.uuid)
    return GpuRoom(gpu, model, tuple(a.instance for a in actual), device_counts(actual), idle)


@dataclass(frozen=True)
class Share:
    """What a pool takes of each GPU: the idle partitions it reuses (UUIDs) and how many of each profile it makes
    (`add`); `desired` is the whole layout of each GPU where something is made (what is there, plus the new)."""

    reuse: Mapping[int, tuple[str, ...]]
    add: Mapping[int, Mapping[str, int]]
    desired: MachineLayout

    @property
    def changes(self) -> list[int]:
        """The GPUs where partitions are made."""
        return sorted(i for i, a in self.add.items() if a)


def share(rooms: Sequence[GpuRoom], wants: MachineLayout) -> Share:
    """Split what the pool `wants` on each GPU into idle partitions reused and new ones, refusing (PluginError)
    where the new ones do not fit beside what the GPU keeps."""
    reuse: dict[int, tuple[str, ...]] = {}
    add: dict[int, dict[str, int]] = {}
    entries: list[GpuLayout] = []
    for r in rooms:
        layout = wants.for_gpu(r.gpu)
        if layout is None:
            continue
        taken: list[str] = []
        new: dict[str, int] = {}
        for d, n in layout.devices(r.model):
            idle = r.idle.get(d.name, ())[:n]
            taken += idle
            if n > len(idle):
                new[d.name] = n - len(idle)
        reuse[r.gpu] = tuple(taken)
        add[r.gpu] = new
        if not new:
            continue
        try:
            place(r.model, new, r.existing)
        except LayoutError as e:
            again = "Or repartition the GPU: run --exclusive, mig(exclusive=True)."
            raise PluginError(f"GPU {r.gpu}: {e} {again}") from None
        whole = dict(r.counts)
        for name, k in new.items():
            whole[name] = whole.get(name, 0) + k
        entries.append(GpuLayout(Layout.of(whole), (r.gpu,)))
    return Share(reuse, add, MachineLayout(tuple(entries)))


def check_undisturbed(backend: Backend, s: Share, mine: Leases | None, what: str) -> None:
    """Refuse (PluginError) where applying `s.desired` would change a partition the GPUs keep (the planner found
    no way to add the new ones beside them)."""
    from ..reconcile.core import plan_apply

    if not s.changes:
        return
    p = plan_apply(s.desired, backend, gpus=s.changes, force=False, leases=mine)
    if p.disturbed:
        gpus = ", ".join(str(g.gpu.index) for g in p.gpus if g.disturbed)
        raise PluginError(
            f"{what}: its partitions fit on GPU {gpus} only if partitions there move. Free them (migpool "
            "teardown), or repartition the GPU: run --exclusive, mig(exclusive=True)."
        )


def spread(rooms: Sequence[GpuRoom], profile: str, want: int) -> MachineLayout:
    """`want` partitions of `profile` over the GPUs: idle ones first, GPU by GPU, then new ones (the caller has
    checked that they have room)."""
    counts: dict[int, int] = {}
    left = want
    for r in rooms:
        counts[r.gpu] = min(left, len(r.idle.get(r.name(profile), ())))
        left -= counts[r.gpu]
    for r in rooms:
        k = min(left, r.free(profile))
        counts[r.gpu] += k
        left -= k
    return MachineLayout(
        tuple(GpuLayout(Layout.of({r.name(profile): counts[r.gpu]}), (r.gpu,)) for r in rooms if counts[r.gpu])
    )


@dataclass
class Made:
    """What a pool that shares its GPUs made: its partitions' UUIDs per GPU, and the GPUs where it turned MIG mode
    on (what `release` removes and turns off again)."""

    partitions: dict[int, list[str]] = field(default_factory=dict)
    enabled: set[int] = field(default_factory=set)


def _devices(backend: Backend, gpu: int) -> list[MigDeviceInfo]:
    return backend.mig_devices(gpu) if backend.gpu(gpu).mig_current else []


def claim(
    node: Node,
    selected: Sequence[int],
    wants: MachineLayout,
    rooms: Sequence[GpuRoom],
    mine: Leases,
    what: str,
    made: Made,
    progress: Callable[[str], None] | None,
) -> list[Partition]:
    """Lease the idle partitions wanted, make the others beside what each GPU keeps (noted in `made`) and lease them
    too; called under the GPUs' locks. Returns the pool's partitions, GPU by GPU, in the driver's order."""
    from ..reconcile.core import apply

    backend = node.backend
    s = share(rooms, wants)
    check_undisturbed(backend, s, mine, what)
    chosen = {u for uuids in s.reuse.values() for u in uuids}
    for u in sorted(chosen):
        mine.take(u, f"{what} cannot lease an idle partition")
    before = {i: {d.uuid for d in _devices(backend, i)} for i in s.changes}
    made.enabled |= {i for i in s.changes if not backend.gpu(i).mig_current}
    if s.changes:
        apply(s.desired, backend, gpus=s.changes, leases=mine, progress=progress)
    for i in s.changes:
        left = dict(s.add[i])
        for d in _devices(backend, i):
            name = backend.model(i).device(d.profile_name).name
            if d.uuid not in before[i] and left.get(name, 0) > 0:
                left[name] -= 1
                mine.take(d.uuid, f"GPU {i}: cannot lease the new partition")
                made.partitions.setdefault(i, []).append(d.uuid)
                chosen.add(d.uuid)
    return [Partition.of(d, node.index) for i in selected for d in _devices(backend, i) if d.uuid in chosen]


def release(
    backend: Backend, made: Made, mine: Leases, restore: bool, wait_s: float, progress: Callable[[str], None] | None
) -> None:
    """Remove the partitions in `made` (once the processes on them are gone), and, with `restore`, turn MIG mode
    off again where the pool turned it on and nothing else is left."""
    from ..host.proc import wait_gone
    from ..reconcile.core import actual_instances, change, teardown

    ours = {u for uuids in made.partitions.values() for u in uuids}
    wait_gone([p.pid for i in made.partitions for p in backend.processes(i) if p.device_uuid in ours], wait_s)
    for i, uuids in made.partitions.items():
        instances = [a for a in actual_instances(backend, i) if set(a.uuids) & set(uuids)]
        if instances:
            change(backend, i, destroy=instances, leases=mine, progress=progress)
    for i in sorted(made.enabled):
        if restore and not actual_instances(backend, i):
            teardown(backend, gpus=[i], restore=True, leases=mine, spare_leased=True, progress=progress)


def shortage(
    backend: Backend,
    profile: str,
    capacity: Mapping[int, int],
    whole: Mapping[int, int],
    exclusive: bool,
    said: tuple[str, str, str],
    want: int,
) -> ShortageError:
    """The refusal of `want` partitions of `profile` where the GPUs may give the pool `capacity` (`whole`: each
    emptied); `said`: how it was asked ('concurrency=8'), a hint, and the parameter's name."""
    asked, hint, key = said
    name = backend.model(next(iter(capacity))).device(profile).name
    total = sum(capacity.values())
    others = [g.index for g in backend.gpus() if g.mig_capable and g.index not in capacity]
    everywhere = None
    if others:
        more = (
            (max_devices(backend.model(i), profile) for i in others)
            if exclusive
            else (look(backend, i).room(profile) for i in others)
        )
        everywhere = total + sum(more)
    beside = "" if sum(whole.values()) == total else " beside the partitions they keep"
    return ShortageError(
        f"{asked} but {len(capacity)} GPU(s) hold at most {total} partitions of {name}{beside} "
        f"({', '.join(f'GPU {i}: {c}' for i, c in capacity.items())}){hint}, or set {key}={total}",
        want=want,
        profile=name,
        capacity=capacity,
        whole=sum(whole.values()),
        everywhere=everywhere,
    )
