"""What a task that may move between partitions yields (`@function(checkpoint=True)`): small, so that a worker
imports it without the rest of the task API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Checkpoint:
    """What a `checkpoint=True` task yields: the state to resume from (passed back as `resume=`), and how far it is,
    `done` of `total` units of work (steps, samples, epochs: any unit, the same in every run of the function).
    Dynamic MIG learns each partition size's speed from the time between checkpoints, per unit, whatever the
    task's length, and may move the task at a checkpoint when a size would finish it sooner. A task may yield its
    state alone: it can then be moved, but its speed is learned only from whole runs."""

    state: Any
    done: float | None = None
    total: float | None = None
