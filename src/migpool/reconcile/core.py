"""The reconciler: make GPUs match a desired layout with the fewest operations, safely.

Everything is checked before the first change; a failure midway rolls back what this run did; a run
that was killed converges on the next apply of the same layout (it plans from the actual state).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..backend.base import Backend, GpuInfo, MigDeviceInfo, ProcessInfo, read_only
from ..errors import (
    ApplyError,
    BackendError,
    InUseError,
    LayoutError,
    LockTimeoutError,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    ReadOnlyError,
    ResetRequiredError,
)
from ..host.journal import InstanceRecord, Journal
from ..host.leases import Holder, Leases, holders, refusal
from ..host.locks import LockTimeout, PathLock
from ..host.proc import wait_gone
from ..mig.catalog import ComputeProfile, GpuModel, Profile
from ..mig.layout import GpuLayout, Layout, MachineLayout
from ..mig.planner import PlannedInstance, Transition, plan_transition
from .operations import (
    CreateCi,
    CreateGi,
    DestroyCi,
    DestroyGi,
    DisableMig,
    EnableMig,
    GpuRun,
    Operation,
    Progress,
    ResetGpu,
    Undo,
)


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


@dataclass
class ApplyResult:
    operations: list[Operation] = field(default_factory=list)
    mig_devices: list[str] = field(default_factory=list)
    pending_reset: list[str] = field(default_factory=list)
    plan: ApplyPlan | None = None


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
        return InstanceRecord(
            self.instance.profile.name, self.instance.start, self.instance.size, None if whole else list(self.shape)
        )


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


def _describe_procs(procs: Sequence[ProcessInfo]) -> str:
    return "; ".join(f"PID {p.pid} ({p.name}) on {p.device_uuid}" for p in procs)


def leased(backend: Backend, uuids: Sequence[str], mine: Leases | None = None) -> dict[str, Holder]:
    """Which of these MIG device (or GPU) UUIDs a holder other than `mine` leases now (leases.py)."""
    return holders(backend.state_dirs().leases(write=False), uuids, mine)


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
                    f"GPU {g.index}: cannot enable MIG mode while processes use the GPU: {_describe_procs(procs)}. "
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
                f"GPU {g.index}: the new layout would destroy MIG devices in use: {_describe_procs(hit)}. "
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


def _stop_processes(procs: Sequence[ProcessInfo], progress: Progress | None) -> None:
    for p in procs:
        if progress:
            progress(f"stopping PID {p.pid} ({p.name}) on {p.device_uuid} (--force)")
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for pid in wait_gone([p.pid for p in procs], 10.0):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _Run:
    """One apply's executed operations, able to undo them in reverse order."""

    def __init__(self, backend: Backend, journal: Journal, progress: Progress | None) -> None:
        self.backend = backend
        self.journal = journal
        self.progress = progress
        self.done: list[Undo] = []
        self.performed: list[Operation] = []

    def execute(self, plan: GpuPlan, result: ApplyResult) -> None:
        if plan.busy:
            _stop_processes(plan.busy, self.progress)
        run = GpuRun(self.backend, plan.gpu, plan.model, self.journal, self.progress)
        try:
            for op in plan.operations:
                if self.progress:
                    self.progress(str(op))
                undo = op.do(run)
                if undo is not None:
                    self.done.append(undo)
                self.performed.append(op)
                if run.stopped:
                    return
        finally:
            result.pending_reset += run.pending_reset

    def rollback(self) -> list[str]:
        """Undo this run's operations, newest first; returns what could not be undone."""
        problems = []
        new_gi: dict[tuple[int, int], int] = {}  # (gpu, old GI id) -> id of the recreated GI
        for undo in reversed(self.done):
            try:
                undo.undo(self.backend, new_gi)
            except BackendError as e:
                problems.append(f"could not undo {undo.describe()} on GPU {undo.gpu}: {e}")
        return problems


def journal_of(backend: Backend) -> Journal:
    """The journal of this backend's GPUs (where: `backend.state_dirs()`)."""
    dirs = backend.state_dirs()
    return Journal(dirs.journal(), dirs.locks() / "journal.lock")


def gpu_lock_path(backend: Backend, gpu: GpuInfo) -> Path:
    """The file whose lock makes changes to one GPU one at a time."""
    return backend.state_dirs().locks() / f"gpu-{gpu.uuid}.lock"


@contextlib.contextmanager
def locked(backend: Backend, gpus: Sequence[GpuInfo], timeout: float, progress: Progress | None) -> Iterator[None]:
    """Hold the lock of each of these GPUs (taken in UUID order, so two callers never wait on each other in a
    circle): changes to different GPUs run at once, as dynamic MIG's do; two changes to one GPU never do. The
    locks are reentrant in the holding thread: a caller that checks and leases partitions around an apply holds
    them across both."""
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as held:
        for g in sorted(gpus, key=lambda g: g.uuid):
            path = gpu_lock_path(backend, g)
            lock = PathLock(path)
            try:
                lock.acquire(timeout=0)
            except LockTimeout:
                if progress:
                    progress(f"another migpool apply is changing GPU {g.index} ({path}); waiting up to {timeout:.0f}s")
                try:
                    lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
                except LockTimeout:
                    raise LockTimeoutError(
                        f"another migpool apply held GPU {g.index}'s lock {path} for over "
                        f"{timeout:.0f}s; try again when it has finished"
                    ) from None
            held.callback(lock.release)
        yield


def apply(
    desired: MachineLayout | Layout | dict | str,
    backend: Backend,
    *,
    gpus: Sequence[int | str] | None = None,
    force: bool = False,
    reset: bool = False,
    dry_run: bool = False,
    lock_timeout: float = 60.0,
    progress: Progress | None = None,
    leases: Leases | None = None,
) -> ApplyResult:
    """Make the GPUs match `desired`; returns the operations performed and the MIG device UUIDs. Partitions that
    a holder other than `leases` leases are never destroyed (LeasedError)."""
    if dry_run:
        plan = plan_apply(desired, backend, gpus=gpus, force=force, reset=reset, leases=leases)
        return ApplyResult(plan=plan)
    with locked(backend, select_gpus(backend, gpus), lock_timeout, progress):
        plan = plan_apply(desired, backend, gpus=gpus, force=force, reset=reset, leases=leases)
        check_may_change(plan, backend)
        journal = journal_of(backend)
        result = ApplyResult(plan=plan)
        run = _Run(backend, journal, progress)
        for gp in plan.gpus:
            if gp.operations:
                prior = actual_instances(backend, gp.gpu.index) if gp.gpu.mig_current else []
                journal.remember_prior(gp.gpu.uuid, gp.gpu.mig_current, [a.record for a in prior])
        try:
            for gp in plan.gpus:
                run.execute(gp, result)
        except BackendError as e:
            problems = run.rollback()
            state = {
                g.gpu.index: [str(a.instance) for a in actual_instances(backend, g.gpu.index)]
                for g in plan.gpus
                if backend.gpu(g.gpu.index).mig_current
            }
            raise ApplyError(
                f"apply failed at '{_next_op(plan, run)}': {e}. "
                + (
                    "Rolled back this run's changes. "
                    if not problems
                    else "Rollback was incomplete: " + "; ".join(problems) + ". "
                )
                + f"State now: {state or 'no GPU instances'}",
                state,
            ) from e
        result.operations = run.performed
        for gp in plan.gpus:
            if backend.gpu(gp.gpu.index).mig_current:
                result.mig_devices += [d.uuid for d in backend.mig_devices(gp.gpu.index)]
        return result


def change(
    backend: Backend,
    gpu: int,
    *,
    create: Sequence[PlannedInstance] = (),
    destroy: Sequence[Actual] = (),
    lock_timeout: float = 60.0,
    progress: Progress | None = None,
    leases: Leases | None = None,
) -> list[MigDeviceInfo]:
    """Destroy these instances and create those, on one GPU (MIG mode enabled first where needed), with apply's
    refusals, journal and rollback, under that GPU's lock; returns the MIG devices created, in the order of
    `create`, leased by `leases` (whose leases of the destroyed ones end). Dynamic MIG changes go through here."""
    g = backend.gpu(gpu)
    with locked(backend, [g], lock_timeout, progress):
        g = backend.gpu(gpu)  # read again under the lock
        model = backend.model(gpu)
        if g.mig_current != g.mig_pending:
            raise ResetRequiredError(f"GPU {gpu} has a MIG mode change pending a reset; reset it first")
        gone = {u for a in destroy for u in a.uuids}
        for u, who in leased(backend, sorted(gone), leases).items():
            raise refusal(u, who, f"GPU {gpu}: will not destroy a partition another holder uses")
        busy = [p for p in backend.processes(gpu) if p.device_uuid in gone]
        if busy:
            raise InUseError(f"GPU {gpu}: will not destroy MIG devices in use: {_describe_procs(busy)}")
        ops: list[Operation] = [] if g.mig_current else [EnableMig(gpu)]
        for a in destroy:
            ops += [
                DestroyCi(gpu, a.instance.profile.compute(sl).name, a.instance.placement, a.gi_id, c, slices=sl)
                for c, sl in zip(a.ci_ids, a.ci_slices, strict=True)
            ]
            ops.append(DestroyGi(gpu, a.instance.profile.name, a.instance.placement, a.gi_id))
        for inst in create:
            ops += [
                CreateGi(gpu, inst.profile.name, inst.placement),
                CreateCi(gpu, inst.profile.name, inst.placement, slices=inst.profile.slices),
            ]
        gp = GpuPlan(
            g,
            model,
            Layout(),
            Transition((), tuple(a.instance for a in destroy), tuple(create)),
            ops,
            [a.instance for a in destroy],
            [],
        )
        plan = ApplyPlan([gp])
        check_may_change(plan, backend)
        journal = journal_of(backend)
        prior = actual_instances(backend, gpu) if g.mig_current else []
        journal.remember_prior(g.uuid, g.mig_current, [a.record for a in prior])
        run = _Run(backend, journal, progress)
        result = ApplyResult(plan=plan)
        try:
            run.execute(gp, result)
        except BackendError as e:
            problems = run.rollback()
            raise ApplyError(
                f"GPU {gpu}: '{_next_op(plan, run)}' failed: {e}. "
                + ("Rolled back." if not problems else "Rollback was incomplete: " + "; ".join(problems))
            ) from e
        if result.pending_reset:
            raise ResetRequiredError("; ".join(result.pending_reset))
        made = {d.placement: d for d in backend.mig_devices(gpu)}
        devices = [made[inst.placement] for inst in create]
        if leases is not None:
            for u in gone:
                leases.release(u)
            for d in devices:
                leases.take(d.uuid, f"GPU {gpu}: cannot lease the new partition")
        return devices


def _next_op(plan: ApplyPlan, run: _Run) -> str:
    ops = plan.operations
    return str(ops[len(run.performed)]) if len(run.performed) < len(ops) else "the end"


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


def teardown(
    backend: Backend,
    *,
    gpus: Sequence[int | str] | None = None,
    restore: bool = False,
    force: bool = False,
    lock_timeout: float = 60.0,
    progress: Progress | None = None,
    leases: Leases | None = None,
    spare_leased: bool = False,
) -> ApplyResult:
    """Remove the instances migpool created; with `restore`, return each GPU to the state recorded
    before migpool first changed it (MIG mode and instances). Partitions that a holder other than `leases`
    leases are refused (LeasedError), or with `spare_leased` kept: a GPU where some are kept gets its other
    instances removed and is restored later, by the last holder's teardown (its journal entry stays)."""
    selected = select_gpus(backend, gpus)
    with locked(backend, selected, lock_timeout, progress):
        journal = journal_of(backend)
        desired_entries = []
        restored = []
        for g in selected:
            actual = actual_instances(backend, g.index) if g.mig_current else []
            kept = leased(backend, [u for a in actual for u in a.uuids], leases) if spare_leased else {}
            spared = [a for a in actual if kept.keys() & set(a.uuids)]
            if restore and not spared:
                prior = journal.prior(g.uuid)
                if prior is None:
                    continue
                enabled, instances = prior
                layout = (
                    Layout.of(record_counts(backend.model(g.index), instances))
                    if enabled
                    else Layout(mig_enabled=False)
                )
                restored.append(g.uuid)
            else:
                created = journal.created(g.uuid)
                if not created or not g.mig_current:
                    continue
                mine = {(c.profile, c.start, c.size) for c in created}
                staying = [
                    a
                    for a in actual
                    if a in spared or (a.instance.profile.name, a.instance.start, a.instance.size) not in mine
                ]
                layout = Layout.of(device_counts(staying))
            desired_entries.append(GpuLayout(layout, (g.index,)))
        if not desired_entries:
            return ApplyResult()
        result = apply(
            MachineLayout(tuple(desired_entries)),
            backend,
            gpus=gpus,
            force=force,
            lock_timeout=lock_timeout,
            progress=progress,
            leases=leases,
        )
        for uuid in restored:
            journal.forget(uuid)
        return result


def recreate_operations(model: GpuModel, existing: Sequence[PlannedInstance], layout: Layout | dict | str) -> int:
    """What 'destroy everything, recreate' (mig-parted's way when a GPU's config differs) costs in operations."""
    from ..mig.planner import plan

    if sorted(str(i.profile) for i in existing) == sorted(str(i.profile) for i in plan(model, layout)):
        return 0
    return 2 * len(existing) + 2 * len(plan(model, layout))
