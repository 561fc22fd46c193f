"""What each worker of a pool has done: counts, busy time, the last error, task durations.

A running pool also publishes these once a second to a small JSON file (one per pool, under the state dir),
so `migpool top` and `migpool metrics` in another process show the pool's workers against their partitions.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# task duration histogram buckets (seconds), Prometheus' defaults stretched to minutes-long training tasks
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass
class WorkerStats:
    worker: int
    partition: str | None = None  # the MIG UUID
    profile: str | None = None
    gpu: int | None = None
    gi_id: int | None = None
    pid: int = 0
    tasks_started: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0  # raised an exception
    tasks_lost: int = 0  # the worker died, or the task ran past its timeout
    running: int = 0
    queued: int = 0  # sent to this worker, waiting behind the running task
    task: str | None = None  # the function of the task running now
    busy_s: float = 0.0
    last_error: str | None = None
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    duration_sum: float = 0.0

    def finished(self, seconds: float, error: str | None = None, lost: bool = False) -> None:
        self.busy_s += seconds
        self.duration_sum += seconds
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        if lost:
            self.tasks_lost += 1
        elif error is not None:
            self.tasks_failed += 1
        else:
            self.tasks_done += 1
        if error is not None:
            self.last_error = error

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pools_dir() -> Path:
    from ..backend.simulated import state_dir

    return state_dir() / "pools"


class Publisher:
    """Writes a pool's stats to its file once a second while the pool runs; removes it at the end."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], interval: float = 1.0) -> None:
        self.snapshot = snapshot
        self.interval = interval
        self.path = pools_dir() / f"pool-{os.getpid()}-{id(self):x}.json"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="migpool-stats", daemon=True)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread.start()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)


def running_pools() -> Iterator[dict[str, Any]]:
    """The stats of the pools running on this machine (files of exited processes are skipped and removed)."""
    from ..host.proc import pid_alive

    folder = pools_dir()
    if not folder.is_dir():
        return
    for f in sorted(folder.glob("pool-*.json")):
        try:
            pid = int(f.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not pid_alive(pid):
            f.unlink(missing_ok=True)
            continue
        with contextlib.suppress(OSError, ValueError):
            yield json.loads(f.read_text())
