"""Planning a layout change: every check made and every operation listed before anything changes (reads only),
and how the GPUs differ from a layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..backend.base import Backend, GpuInfo, ProcessInfo, read_only
from ..errors import (
    InUseError,
    LayoutError,
    NoPermissionError,
    NotSupportedError,
    ReadOnlyError,
    ResetRequiredError,
)
from ..host.leases import Leases, refusal
from ..mig.catalog import ComputeProfile, GpuModel, Profile
from ..mig.layout import Layout, MachineLayout
from ..mig.planner import PlannedInstance, Transition, plan_transition
from .operations import CreateCi, CreateGi, DestroyCi, DestroyGi, DisableMig, EnableMig, Operation, ResetGpu
from .state import Actual, actual_instances, describe_procs, device_counts, leased, select_gpus


@dataclass
class GpuPlan:
    gpu: GpuInfo
    model: GpuModel
    layout: Layout
    transition: Transition
    operations: list[Operation]
    disturbed: list[PlannedInstance]
    busy: list[ProcessInfo]
    actual: list[Actual] = field(default_factory=list)  # what the GPU held when the plan was made

    def devices_after(self, inst: PlannedInstance) -> list[str]:
        """The MIG device profiles a kept or new GPU instance holds once the plan has run, largest first."""
        now = next((a for a in self.actual if a.instance == inst), None)
        held = dict(zip(now.ci_ids, now.device_names, strict=True)) if now else {}
        gi = now.gi_id if now else None
        added = []
        for op in self.operations:
            if isinstance(op, DestroyCi) and op.gi_id == gi and op.ci_id is not None:
                held.pop(op.ci_id, None)
            elif isinstance(op, CreateCi) and op.placement == inst.placement and (op.gi_id is None or op.gi_id == gi):
                added.append(op.profile)
        names = [*held.values(), *added]
        return sorted(names, key=lambda n: -inst.profile.compute(self.model.device(n).ci.slices).slices)


@dataclass
class ApplyPlan:
    gpus: list[GpuPlan]

    @property
    def operations(self) -> list[Operation]:
        return [op for g in self.gpus for op in g.operations]

    @property
    def disturbed(self) -> int:
        return sum(len(g.disturbed) for g in self.gpus)


@dataclass(frozen=True)
class _CiChange:
    """How one kept GPU instance comes to hold a wanted set of compute instances: which of its own go (indices into
    its `ci_ids`) and which are made beside the rest."""

    drop: tuple[int, ...]
    add: tuple[ComputeProfile, ...]


def _ci_change(a: Actual, wanted: Sequence[ComputeProfile], busy: set[str]) -> _CiChange | None:
    """Keep what `a` already holds of `wanted` (its compute instances not in use first, among equal ones, go), add
    the rest where the driver will place it; None where the additions do not fit beside what stays."""
    gi = a.instance.profile
    missing = list(wanted)
    order = sorted(range(len(a.ci_ids)), key=lambda k: a.ci_uuids[k] not in busy if a.ci_uuids else True)
    stay, drop = [], []
    for k in order:
        c = gi.compute(a.ci_slices[k])
        if c in missing:
            missing.remove(c)
            stay.append((c, a.ci_starts[k]))
        else:
            drop.append(k)
    missing.sort(key=lambda c: -c.slices)
    if gi.place_compute(missing, stay) is None:
        return None
    return _CiChange(tuple(sorted(drop)), tuple(missing))


def _compute_instance_ops(
    gpu: int,
    shapes: Sequence[tuple[Profile, tuple[ComputeProfile, ...]]],
    kept: Sequence[Actual],
    created: Sequence[PlannedInstance],
    busy: set[str],
) -> tuple[list[Operation], list[str]]:
    """The operations that make the kept GPU instances and the new ones (`created`, made here too) each hold one of
    `shapes`, and the MIG device UUIDs they destroy. Each kept GPU instance takes the wanted shape that costs it the
    fewest destroyed compute instances in use, then the fewest destroyed, then the fewest made (those in use
    choose first); where no shape fits beside what it keeps, its compute instances are all remade."""
    left: dict[Profile, list[tuple[ComputeProfile, ...]]] = {}
    for gi, cis in shapes:
        left.setdefault(gi, []).append(tuple(sorted(cis, key=lambda c: -c.slices)))
    ops: list[Operation] = []
    gone: list[str] = []
    for a in sorted(kept, key=lambda a: not (busy & set(a.uuids))):
        gi = a.instance.profile
        options = [(k, ch) for k, cis in enumerate(left[gi]) if (ch := _ci_change(a, cis, busy)) is not None]

        def cost(option: tuple[int, _CiChange], a: Actual = a) -> tuple[int, int, int]:
            ch = option[1]
            in_use = sum(1 for k in ch.drop if a.ci_uuids and a.ci_uuids[k] in busy)
            return (in_use, len(ch.drop), len(ch.add))

        if options:
            k, change = min(options, key=cost)
            left[gi].pop(k)
        else:  # remade whole
            change = _CiChange(tuple(range(len(a.ci_ids))), left[gi].pop(0))
        for k in change.drop:
            sl = a.ci_slices[k]
            ops.append(DestroyCi(gpu, gi.compute(sl).name, a.instance.placement, a.gi_id, a.ci_ids[k], slices=sl))
            if a.ci_uuids:
                gone.append(a.ci_uuids[k])
        ops += [CreateCi(gpu, c.name, a.instance.placement, a.gi_id, slices=c.slices) for c in change.add]
    for inst in created:
        cis = left[inst.profile].pop(0)
        ops.append(CreateGi(gpu, inst.profile.name, inst.placement))
        ops += [CreateCi(gpu, c.name, inst.placement, slices=c.slices) for c in cis]
    return ops, gone


def plan_apply(
    desired: MachineLayout | Layout | dict | str,
    backend: Backend,
    *,
    gpus: Sequence[int | str] | None = None,
    force: bool = False,
    reset: bool = False,
    leases: Leases | None = None,
) -> ApplyPlan:
    """Check everything and compute the operations (reads only); raises a specific error for a layout that
    cannot be applied. `apply` also calls `check_may_change` before its first change. A partition (or GPU)
    leased by a holder other than `leases` is kept where the layout allows it, else refused (even with force)."""
    desired = MachineLayout.of(desired)
    plans: list[GpuPlan] = []
    for g in select_gpus(backend, gpus):
        layout = desired.for_gpu(g.index)
        if layout is None:
            continue
        if not g.mig_capable:
            raise NotSupportedError(
                f"GPU {g.index} ({g.name}) does not support MIG; MIG-capable GPUs: A100, A30, H100, H200, "
                "GH200, H20, B200, GB200, RTX PRO 6000 Blackwell"
            )
        if g.mig_current != g.mig_pending and not reset:
            blockers = backend.reset_blockers(g.index)
            raise ResetRequiredError(
                f"GPU {g.index} has MIG mode {'enable' if g.mig_pending else 'disable'} pending until a GPU reset. "
                f"Run `migpool apply ... --reset` (or `nvidia-smi --gpu-reset -i {g.index}`) once nothing uses the GPU"
                + (f"; seen here, and commonly blocking a reset: {', '.join(blockers)}" if blockers else "")
                + ". A reboot also applies it."
            )
        model = backend.model(g.index)
        try:
            layout.resolve(model)
        except LayoutError as e:
            raise LayoutError(f"GPU {g.index}: {e}") from None
        actual = actual_instances(backend, g.index) if g.mig_current else []
        procs = backend.processes(g.index)
        taken = leased(backend, [g.uuid, *(u for a in actual for u in a.uuids)], leases)
        busy_uuids = {p.device_uuid for p in procs} | set(taken)
        busy_inst = [a.instance for a in actual if busy_uuids & set(a.uuids)]
        target = layout if layout.mig_enabled else Layout()
        try:
            tr = plan_transition(model, target, [a.instance for a in actual], busy=busy_inst)
        except LayoutError as e:
            inside = [f"{n}×{d.name}" for d, n in target.devices(model) if not d.whole]
            hosts: dict[str, int] = {}
            for gi, cis in target.shapes(model):
                if any(c.slices != gi.slices for c in cis):
                    hosts[gi.name] = hosts.get(gi.name, 0) + 1
            gis = ", ".join(f"{n}×{name}" for name, n in hosts.items())
            packed = f" ({', '.join(inside)}: compute instances inside {gis} GPU instances)" if inside else ""
            raise LayoutError(f"GPU {g.index}: {e}{packed}") from None
        ops: list[Operation] = []
        if reset and g.mig_current != g.mig_pending:
            ops.append(ResetGpu(g.index))
        mig_now = g.mig_pending if reset else g.mig_current
        if layout.mig_enabled and not mig_now:
            if procs and not force:
                raise InUseError(
                    f"GPU {g.index}: cannot enable MIG mode while processes use the GPU: {describe_procs(procs)}. "
                    "Stop them, or let migpool stop them (--force; force=True in Python)."
                )
            ops.append(EnableMig(g.index))
        by_inst = {a.instance: a for a in actual}
        ci_ops, ci_gone = _compute_instance_ops(
            g.index, target.shapes(model), [by_inst[i] for i in tr.keep], tr.create, busy_uuids
        )
        hit: list[ProcessInfo] = []
        doomed = [(a.instance.profile.name, u) for inst in tr.destroy for a in [by_inst[inst]] for u in a.uuids]
        doomed += [(d.profile_name, d.uuid) for d in backend.mig_devices(g.index) if d.uuid in ci_gone]
        for name, u in doomed:
            if u in taken:
                raise refusal(u, taken[u], f"GPU {g.index}: the layout would destroy {name}")
            hit += [p for p in procs if p.device_uuid == u]
        for inst in tr.destroy:
            a = by_inst[inst]
            ops += [
                DestroyCi(g.index, inst.profile.compute(sl).name, inst.placement, a.gi_id, c, slices=sl)
                for c, sl in zip(a.ci_ids, a.ci_slices, strict=True)
            ]
            ops.append(DestroyGi(g.index, inst.profile.name, inst.placement, a.gi_id))
        if hit and not force:
            raise InUseError(
                f"GPU {g.index}: the new layout would destroy MIG devices in use: {describe_procs(hit)}. "
                "Stop those processes, choose a layout that keeps their partitions, or let migpool stop them "
                "(--force; force=True in Python)."
            )
        ops += ci_ops
        if not layout.mig_enabled and (g.mig_current or g.mig_pending):
            ops.append(DisableMig(g.index))
        if ops and g.uuid in taken:
            raise refusal(g.uuid, taken[g.uuid], f"GPU {g.index}: the layout would change it")
        disturbed = list(tr.destroy) + [i for i in tr.keep if set(by_inst[i].uuids) & set(ci_gone)]
        plans.append(GpuPlan(g, model, layout, tr, ops, disturbed, hit if force else [], actual))
    return ApplyPlan(plans)


def check_may_change(plan: ApplyPlan, backend: Backend) -> None:
    """Refuse, before the first change, when MIGPOOL_READ_ONLY is set or this process lacks permission."""
    if not plan.operations:
        return
    if read_only():
        raise ReadOnlyError(
            "MIGPOOL_READ_ONLY is set: migpool refused before changing anything. It would have run:\n  "
            + "\n  ".join(str(op) for op in plan.operations)
        )
    why = backend.permission_problem()
    if why:
        raise NoPermissionError(why)


def diff(
    desired: MachineLayout | Layout | dict | str, backend: Backend, *, gpus: Sequence[int | str] | None = None
) -> list[str]:
    """How the GPUs differ from `desired` (empty when they match). Reads only."""
    desired = MachineLayout.of(desired)
    out = []
    for g in select_gpus(backend, gpus):
        layout = desired.for_gpu(g.index)
        if g.index in desired.uncovered:
            out.append(f"GPU {g.index}: no entry of the config selects it (mig-parted's assert fails for it too)")
        if layout is None:
            continue
        if not layout.mig_enabled:
            if g.mig_current or g.mig_pending:
                out.append(f"GPU {g.index}: MIG mode is enabled; the layout wants it disabled")
            continue
        if not g.mig_current:
            out.append(f"GPU {g.index}: MIG mode is disabled")
            continue
        model = backend.model(g.index)
        want: dict[str, int] = {d.name: n for d, n in layout.devices(model)}
        actual = actual_instances(backend, g.index)
        have = device_counts(actual)
        for a in actual:
            if not a.ci_ids:
                out.append(f"GPU {g.index}: {a.instance} has no compute instance")
        for name in sorted(set(want) | set(have)):
            if want.get(name, 0) != have.get(name, 0):
                out.append(f"GPU {g.index}: {name}: want {want.get(name, 0)}, have {have.get(name, 0)}")
    return out


def recreate_operations(model: GpuModel, existing: Sequence[PlannedInstance], layout: Layout | dict | str) -> int:
    """What 'destroy everything, recreate' (mig-parted's way when a GPU's config differs) costs in operations."""
    from ..mig.planner import plan

    if sorted(str(i.profile) for i in existing) == sorted(str(i.profile) for i in plan(model, layout)):
        return 0
    return 2 * len(existing) + 2 * len(plan(model, layout))
