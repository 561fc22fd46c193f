"""The reconciler: make GPUs match a desired layout with the fewest operations, safely.

Everything is checked before the first change (plan.py); a failure midway rolls back what this run did
(execute.py); a run that was killed converges on the next apply of the same layout (it plans from the actual
state). `apply`, `change` and `teardown` (which also restores) are the callers; this module is also the stable
import path of the reconciler's public names.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..backend.base import Backend, MigDeviceInfo
from ..errors import InUseError, ResetRequiredError
from ..host.leases import Leases, refusal
from ..host.locks import waits_bounded
from ..mig.layout import GpuLayout, Layout, MachineLayout
from ..mig.planner import PlannedInstance, Transition
from .execute import ApplyResult, execute, gpu_lock_path, journal_of, locked
from .operations import CreateCi, CreateGi, DestroyCi, DestroyGi, EnableMig, Operation, Progress
from .plan import ApplyPlan, GpuPlan, check_may_change, diff, plan_apply, recreate_operations
from .state import (
    Actual,
    actual_instances,
    describe_procs,
    device_counts,
    leased,
    record_counts,
    select_gpus,
)

__all__ = [
    "Actual",
    "ApplyPlan",
    "ApplyResult",
    "GpuPlan",
    "actual_instances",
    "apply",
    "change",
    "check_may_change",
    "device_counts",
    "diff",
    "gpu_lock_path",
    "journal_of",
    "leased",
    "locked",
    "plan_apply",
    "record_counts",
    "recreate_operations",
    "select_gpus",
    "teardown",
]


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
    a holder other than `leases` leases are never destroyed (LeasedError). Every lock it waits for (the GPUs',
    the journal's, a simulated driver's) is waited for at most `lock_timeout` seconds (LockTimeoutError)."""
    with waits_bounded(lock_timeout):
        if dry_run:
            plan = plan_apply(desired, backend, gpus=gpus, force=force, reset=reset, leases=leases)
            return ApplyResult(plan=plan)
        return execute(
            backend,
            select_gpus(backend, gpus),
            lambda: plan_apply(desired, backend, gpus=gpus, force=force, reset=reset, leases=leases),
            lock_timeout=lock_timeout,
            progress=progress,
        )


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
    gone = {u for a in destroy for u in a.uuids}
    # the GPU's lock is held on while what was made is leased
    with waits_bounded(lock_timeout), locked(backend, [backend.gpu(gpu)], lock_timeout, progress):
        result = execute(
            backend,
            [backend.gpu(gpu)],
            lambda: _change_plan(backend, gpu, create, destroy, gone, leases),
            lock_timeout=lock_timeout,
            progress=progress,
        )
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


def _change_plan(
    backend: Backend,
    gpu: int,
    create: Sequence[PlannedInstance],
    destroy: Sequence[Actual],
    gone: set[str],
    leases: Leases | None,
) -> ApplyPlan:
    """`change`'s checks and operations, made under the GPU's lock: nothing another holder leases or a process
    uses is destroyed, and no MIG mode change may be pending."""
    g = backend.gpu(gpu)  # read again under the lock
    if g.mig_current != g.mig_pending:
        raise ResetRequiredError(f"GPU {gpu} has a MIG mode change pending a reset; reset it first")
    for u, who in leased(backend, sorted(gone), leases).items():
        raise refusal(u, who, f"GPU {gpu}: will not destroy a partition another holder uses")
    busy = [p for p in backend.processes(gpu) if p.device_uuid in gone]
    if busy:
        raise InUseError(f"GPU {gpu}: will not destroy MIG devices in use: {describe_procs(busy)}")
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
    transition = Transition((), tuple(a.instance for a in destroy), tuple(create))
    disturbed = [a.instance for a in destroy]
    return ApplyPlan([GpuPlan(g, backend.model(gpu), Layout(), transition, ops, disturbed, [])])


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
    with waits_bounded(lock_timeout):
        return _teardown(backend, gpus, restore, force, lock_timeout, progress, leases, spare_leased)


def _teardown(
    backend: Backend,
    gpus: Sequence[int | str] | None,
    restore: bool,
    force: bool,
    lock_timeout: float,
    progress: Progress | None,
    leases: Leases | None,
    spare_leased: bool,
) -> ApplyResult:
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
                staying = [a for a in actual if a in spared or not any(c.same_instance(a.instance) for c in created)]
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
