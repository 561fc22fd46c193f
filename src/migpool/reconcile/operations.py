"""The driver calls the reconciler makes: one small class per kind, each able to do itself and to say how it is
undone. `reconcile` plans lists of them and runs them in order; a failure undoes the run's records newest first.
They write nothing but the driver's state: what they create and destroy is journaled before the run (execute.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from ..backend.base import Backend, GpuInfo
from ..errors import InsufficientResourcesError, InUseError
from ..host.journal import InstanceRecord
from ..mig.catalog import GpuModel, Placement

Progress = Callable[[str], None]
T = TypeVar("T")
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)


def retry_busy(fn: Callable[[], T], progress: Progress | None, what: str) -> T:
    """Call `fn`; the driver briefly reports just-freed slices as in use, so those answers are retried with a
    short backoff before the last one is raised."""
    for delay in RETRY_DELAYS:
        try:
            return fn()
        except (InsufficientResourcesError, InUseError):
            if progress:
                progress(f"{what}: driver still busy, retrying in {delay:.2f}s")
            time.sleep(delay)
    return fn()


@dataclass
class GpuRun:
    """What the operations on one GPU share while they run: the GPU, its model, the GPU instances created so far
    (by placement, for the compute instances made inside them), and reset-pending notes."""

    backend: Backend
    gpu: GpuInfo
    model: GpuModel
    progress: Progress | None = None
    new_gi: dict[Placement, int] = field(default_factory=dict)
    pending_reset: list[str] = field(default_factory=list)
    stopped: bool = False  # MIG mode is pending a reset: nothing more can run on this GPU now


# --- undo records ---
class Undo:
    """How to take one performed operation back. `new_gi` maps (gpu, old GI id) to a recreated GI's id."""

    gpu: int

    def undo(self, backend: Backend, new_gi: dict[tuple[int, int], int]) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class RestoreMigMode(Undo):
    gpu: int
    enabled: bool  # what the operation set

    def undo(self, backend: Backend, new_gi: dict[tuple[int, int], int]) -> None:
        backend.set_mig_mode(self.gpu, not self.enabled)

    def describe(self) -> str:
        return "MIG mode " + ("enable" if self.enabled else "disable")


@dataclass(frozen=True)
class DestroyCreatedCi(Undo):
    gpu: int
    gi_id: int
    ci_id: int

    def undo(self, backend: Backend, new_gi: dict[tuple[int, int], int]) -> None:
        backend.destroy_compute_instance(self.gpu, self.gi_id, self.ci_id)

    def describe(self) -> str:
        return f"create-ci (GI {self.gi_id}, CI {self.ci_id})"


@dataclass(frozen=True)
class DestroyCreatedGi(Undo):
    gpu: int
    gi_id: int

    def undo(self, backend: Backend, new_gi: dict[tuple[int, int], int]) -> None:
        backend.destroy_gpu_instance(self.gpu, self.gi_id)

    def describe(self) -> str:
        return f"create-gi (GI {self.gi_id})"


@dataclass(frozen=True)
class RecreateGi(Undo):
    gpu: int
    gi_id: int
    profile_id: int
    placement: Placement

    def undo(self, backend: Backend, new_gi: dict[tuple[int, int], int]) -> None:
        info = retry_busy(lambda: backend.create_gpu_instance(self.gpu, self.profile_id, self.placement), None, "undo")
        new_gi[(self.gpu, self.gi_id)] = info.id

    def describe(self) -> str:
        return f"destroy-gi (GI {self.gi_id})"


@dataclass(frozen=True)
class RecreateCi(Undo):
    gpu: int
    gi_id: int
    slices: int

    def undo(self, backend: Backend, new_gi: dict[tuple[int, int], int]) -> None:
        backend.create_compute_instance(self.gpu, new_gi.get((self.gpu, self.gi_id), self.gi_id), self.slices)

    def describe(self) -> str:
        return f"destroy-ci (GI {self.gi_id})"


# --- operations ---
@dataclass(frozen=True)
class Operation:
    """One driver call the reconciler makes. `kind` names it as the CLI prints it."""

    gpu: int
    profile: str = ""  # a GPU-instance profile, or for a compute instance its device profile (`1c.3g.40gb`)
    placement: Placement | None = None
    gi_id: int | None = None
    ci_id: int | None = None
    slices: int | None = None  # a compute instance's compute slices (None: the whole GPU instance)
    kind: ClassVar[str] = ""

    def __str__(self) -> str:
        where = f" {self.profile}" if self.profile else ""
        if self.placement is not None:
            where += f" at {self.placement}"
        if self.gi_id is not None and self.kind in ("destroy-gi", "destroy-ci"):
            where += f" (GI {self.gi_id}{f', CI {self.ci_id}' if self.ci_id is not None else ''})"
        return f"GPU {self.gpu}: {self.kind}{where}"

    def do(self, run: GpuRun) -> Undo | None:
        """Perform it; returns how to undo it (None: nothing to undo)."""
        raise NotImplementedError

    def _placed(self) -> Placement:
        if self.placement is None:
            raise ValueError(f"{self}: needs a placement")
        return self.placement

    def _gi(self) -> int:
        if self.gi_id is None:
            raise ValueError(f"{self}: needs a GPU instance id")
        return self.gi_id


class ResetGpu(Operation):
    kind = "reset"

    def do(self, run: GpuRun) -> Undo | None:
        run.backend.reset_gpu(self.gpu)
        return None


class EnableMig(Operation):
    kind = "enable-mig"

    def do(self, run: GpuRun) -> Undo | None:
        if not run.backend.set_mig_mode(self.gpu, True):
            run.pending_reset.append(f"GPU {self.gpu}: MIG mode enable is pending a GPU reset")
            run.stopped = True
            return None
        return RestoreMigMode(self.gpu, True)


class DisableMig(Operation):
    kind = "disable-mig"

    def do(self, run: GpuRun) -> Undo | None:
        if not run.backend.set_mig_mode(self.gpu, False):
            run.pending_reset.append(f"GPU {self.gpu}: MIG mode disable is pending a GPU reset")
        return RestoreMigMode(self.gpu, False)


class DestroyCi(Operation):
    kind = "destroy-ci"

    def do(self, run: GpuRun) -> Undo | None:
        gi, ci = self._gi(), self.ci_id
        if ci is None:
            raise ValueError(f"{self}: needs a compute instance id")
        retry_busy(lambda: run.backend.destroy_compute_instance(self.gpu, gi, ci), run.progress, str(self))
        return RecreateCi(self.gpu, gi, self.slices or run.model.device(self.profile).ci.slices)


class DestroyGi(Operation):
    kind = "destroy-gi"

    def do(self, run: GpuRun) -> Undo | None:
        gi, placement = self._gi(), self._placed()
        retry_busy(lambda: run.backend.destroy_gpu_instance(self.gpu, gi), run.progress, str(self))
        return RecreateGi(self.gpu, gi, run.model.profile(self.profile).id, placement)

    def record(self) -> InstanceRecord:
        """The instance it removes, as the journal records it."""
        return InstanceRecord.at(self.profile, self._placed())


class CreateGi(Operation):
    kind = "create-gi"

    def do(self, run: GpuRun) -> Undo | None:
        placement, profile_id = self._placed(), run.model.profile(self.profile).id
        info = retry_busy(
            lambda: run.backend.create_gpu_instance(self.gpu, profile_id, placement), run.progress, str(self)
        )
        run.new_gi[placement] = info.id
        return DestroyCreatedGi(self.gpu, info.id)

    def record(self) -> InstanceRecord:
        """The instance it makes, as the journal records it."""
        return InstanceRecord.at(self.profile, self._placed())


class CreateCi(Operation):
    """A compute instance in an existing GPU instance (`gi_id`), or in the one this run made at `placement`."""

    kind = "create-ci"

    def do(self, run: GpuRun) -> Undo | None:
        gi = self.gi_id if self.gi_id is not None else run.new_gi[self._placed()]
        ci = retry_busy(lambda: run.backend.create_compute_instance(self.gpu, gi, self.slices), run.progress, str(self))
        return DestroyCreatedCi(self.gpu, gi, ci.id)
