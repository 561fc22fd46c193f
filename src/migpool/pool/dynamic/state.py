"""What dynamic MIG's policy keeps between its steps: the partitions it made (`Made`, each with its
worker), those being made (`Making`), the moves of checkpoint tasks (`Move`), and `Held`, the GPUs with
everything placed on them."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ...mig.catalog import GpuModel, Profile
from ...mig.planner import PlannedInstance
from ..api.info import Partition
from .sizing import Key
from .view import Gpu, GpuState, WorkerView


@dataclass
class Made:
    """A partition the pool made, and its worker."""

    gpu: Gpu
    instance: PlannedInstance
    worker: WorkerView
    idle_since: float | None = None
    key: Key | None = None  # the sizing group of the last task it ran (sizing.py)
    holds: float = 0.0  # the memory (MiB) that the tasks it was made for need: it is never resized to less


@dataclass
class Making:
    """A partition being made, on its node's change thread; its worker starts once it exists."""

    gpu: Gpu
    instance: PlannedInstance
    done: Future[list[Partition]]
    reason: str
    key: Key | None
    holds: float


@dataclass
class Move:
    """A checkpoint task asked to stop at its next checkpoint, to resume on a `profile` partition of `gpu`."""

    job: Any
    slot: Made
    gpu: Gpu
    profile: Profile
    asked: float
    done: float
    why: str
    clear: list[Made] = field(default_factory=list)  # idle partitions in the target's way, kept from other tasks
    target: Making | Made | None = None  # once it stopped: the partition made for it
    since: float = 0.0  # when it stopped
    state: str = "asked"  # asked, stopped, then resumed; or ended (before it reached a checkpoint)


class Held:
    """The pool's GPUs and what is placed on them: the partitions that were there before the pool (never
    touched), those it made (`slots`), those being made, and those whose destroy failed (`stale`: still in the
    way, tried again). `changed` counts the creates and destroys: a new layout."""

    def __init__(self, gpus: list[GpuState]) -> None:
        self.gpus = [g for g, _, _ in gpus]
        self.models: dict[Gpu, GpuModel] = {g: m for g, m, _ in gpus}
        self.foreign = {g: list(f) for g, _, f in gpus}
        self.slots: list[Made] = []
        self.making: list[Making] = []  # creates under way: counted as made, their workers start when done
        self.stale: dict[Gpu, list[PlannedInstance]] = {}
        self.changed = 0

    def instances(self, gpu: Gpu) -> list[PlannedInstance]:
        """Everything placed on `gpu`, or about to be."""
        return (
            self.foreign[gpu]
            + self.stale.get(gpu, [])
            + [s.instance for s in self.slots if s.gpu == gpu]
            + [m.instance for m in self.making if m.gpu == gpu]
        )

    def slot_of(self, worker: WorkerView) -> Made | None:
        return next((s for s in self.slots if s.worker is worker), None)
