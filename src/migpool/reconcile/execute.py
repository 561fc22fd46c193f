"""Running planned operations: under the GPUs' locks, written ahead in the journal, undone newest first when
anything fails midway. `apply`, `change`, `teardown` and restoring all change GPUs through `execute`."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..backend.base import Backend, GpuInfo, ProcessInfo
from ..errors import ApplyError, LockTimeoutError, MigpoolError
from ..host.journal import Intent, Journal
from ..host.locks import LockTimeout, PathLock, holders
from ..host.proc import wait_gone
from .operations import CreateGi, DestroyGi, GpuRun, Operation, Progress, Undo
from .plan import ApplyPlan, GpuPlan, check_may_change
from .state import actual_instances


@dataclass
class ApplyResult:
    """What a change did: the operations performed, the MIG device UUIDs of the GPUs it planned for, the GPUs whose
    MIG mode change waits for a reset, and the plan it ran."""

    operations: list[Operation] = field(default_factory=list)
    mig_devices: list[str] = field(default_factory=list)
    pending_reset: list[str] = field(default_factory=list)
    plan: ApplyPlan | None = None


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
    """One run's executed operations, able to undo them in reverse order."""

    def __init__(self, backend: Backend, progress: Progress | None) -> None:
        self.backend = backend
        self.progress = progress
        self.done: list[Undo] = []
        self.performed: list[Operation] = []

    def execute(self, plan: GpuPlan, result: ApplyResult) -> None:
        if plan.busy:
            _stop_processes(plan.busy, self.progress)
        run = GpuRun(self.backend, plan.gpu, plan.model, self.progress)
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
            except Exception as e:  # noqa: BLE001 - whatever stops one undo, the others are still tried
                problems.append(f"could not undo {undo.describe()} on GPU {undo.gpu}: {_one_line(e)}")
        return problems


def _one_line(e: BaseException) -> str:
    """An error in one line; one that is not migpool's is named by its class (OSError: [Errno 28] ...)."""
    text = " ".join(str(e).split())
    return text if isinstance(e, MigpoolError) else f"{type(e).__name__}: {text}" if text else type(e).__name__


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
                    found = holders(path)
                    who = f" ({found[0].describe()})" if found else ""
                    progress(
                        f"another migpool apply is changing GPU {g.index}{who}; waiting up to {timeout:.0f}s for {path}"
                    )
                try:
                    lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
                except LockTimeout as e:
                    raise LockTimeoutError(
                        f"another migpool apply, {e.who()}, held GPU {g.index}'s lock {path} for over "
                        f"{timeout:.0f}s; try again when it has finished"
                    ) from None
            held.callback(lock.release)
        yield


def _next_op(plan: ApplyPlan, run: _Run) -> str:
    ops = plan.operations
    return str(ops[len(run.performed)]) if len(run.performed) < len(ops) else "the end"


def _intents(backend: Backend, plan: ApplyPlan) -> list[Intent]:
    """What the journal must hold before this plan's first change, GPU by GPU."""
    out = []
    for gp in plan.gpus:
        if gp.operations:
            present = actual_instances(backend, gp.gpu.index) if gp.gpu.mig_current else []
            out.append(
                Intent(
                    gp.gpu.uuid,
                    gp.gpu.mig_current,
                    [a.record for a in present],
                    [op.record() for op in gp.operations if isinstance(op, CreateGi)],
                    [op.record() for op in gp.operations if isinstance(op, DestroyGi)],
                )
            )
    return out


def _state_now(backend: Backend, plan: ApplyPlan) -> dict[int, list[str]] | str:
    """The instances on the plan's GPUs now, or why they cannot be read (what failed may stop reads too)."""
    try:
        return {
            g.gpu.index: [str(a.instance) for a in actual_instances(backend, g.gpu.index)]
            for g in plan.gpus
            if backend.gpu(g.gpu.index).mig_current
        }
    except Exception as e:  # noqa: BLE001 - reported in the error being raised, which must not be lost
        return f"unknown (it cannot be read: {_one_line(e)})"


def _write_ahead(backend: Backend, plan: ApplyPlan) -> tuple[Journal, list[str]]:
    """Record in the journal, synced, what the plan will do; a journal that cannot be written (a full disk, a
    directory gone read-only) refuses the apply before its first change. Returns the journal and the GPUs
    recorded."""
    intents = _intents(backend, plan)
    journal: Journal | None = None
    try:
        journal = journal_of(backend)
        if intents:
            journal.begin(intents)
    except OSError as e:
        where = journal.path if journal is not None else "migpool's journal"
        raise ApplyError(
            f"apply refused: cannot record the change in {where} before making it ({_one_line(e)}); nothing was "
            "changed. Free space there (or make it writable) and apply again",
            _state_now(backend, plan),
        ) from None
    assert journal is not None  # journal_of returned, or the apply was refused above
    return journal, [it.gpu_uuid for it in intents]


def _journal_end(journal: Journal, end: Callable[[list[str]], None], uuids: list[str]) -> None:
    """Fold in (or drop) the run's pending change. Should that write fail, the pending change stays: `created`
    counts it and the next apply settles it against the GPU, so nothing is lost and the run's outcome stands."""
    if uuids:
        with contextlib.suppress(OSError, MigpoolError):
            end(uuids)


def execute(
    backend: Backend,
    gpus: Sequence[GpuInfo],
    make_plan: Callable[[], ApplyPlan],
    *,
    lock_timeout: float,
    progress: Progress | None,
) -> ApplyResult:
    """Change GPUs, safely: under the locks of `gpus`, make the plan (so that it is made from the state the locks
    guard), refuse it where changes are not allowed (`check_may_change`), write ahead in the journal the prior
    state of each GPU it changes and what it will create and destroy (refused, with nothing changed, when that
    cannot be written), then run its operations GPU by GPU. When anything fails midway (the driver, a full disk,
    any exception, Ctrl-C), this run's operations are undone, newest first, and ApplyError says in one line what
    failed and what the GPUs hold now (KeyboardInterrupt and SystemExit go on after the rollback). The locks are
    reentrant: a caller that must do more under them (lease what was made) holds `locked` around this call."""
    with locked(backend, gpus, lock_timeout, progress):
        plan = make_plan()
        check_may_change(plan, backend)
        journal, journaled = _write_ahead(backend, plan)
        result = ApplyResult(plan=plan)
        run = _Run(backend, progress)
        try:
            for gp in plan.gpus:
                run.execute(gp, result)
        except BaseException as e:
            problems = run.rollback()
            if not problems:
                _journal_end(journal, journal.abandon, journaled)
            if not isinstance(e, Exception):
                raise
            state = _state_now(backend, plan)
            raise ApplyError(
                f"apply failed at '{_next_op(plan, run)}': {_one_line(e)}. "
                + (
                    "Rolled back this run's changes. "
                    if not problems
                    else "Rollback was incomplete: " + "; ".join(problems) + ". "
                )
                + f"State now: {state or 'no GPU instances'}",
                state,
            ) from e
        _journal_end(journal, journal.commit, journaled)
        result.operations = run.performed
        for gp in plan.gpus:
            if backend.gpu(gp.gpu.index).mig_current:
                result.mig_devices += [d.uuid for d in backend.mig_devices(gp.gpu.index)]
        return result
