"""What dynamic MIG's policy does to the pool, and nothing else does for it: make and destroy partitions, start
and retire their workers, let workers take tasks or not (drain), ask a checkpoint task to stop at its next
checkpoint (pause), fail tasks that nothing can run, and hand waiting tasks out again (pump). In a pool,
controller.SiteEffects carries them out (the site's change threads, the scheduler); in tests, a recorder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from ...mig.planner import PlannedInstance
from ..api.info import Partition
from .view import Gpu, WorkerView


class Effects(Protocol):
    """How the policy's decisions are carried out. Those that touch workers or jobs may be called with the view's
    lock held (they act on the state read under it)."""

    def make(self, gpu: Gpu, inst: PlannedInstance) -> Future[list[Partition]]:
        """Start making `inst` (each node's in order, nodes side by side); its future ends with the partition."""
        ...

    def unmake(self, gpu: Gpu, instances: list[PlannedInstance], pids: Sequence[int]) -> None:
        """Destroy these instances now, once the processes `pids` (their retired workers) have ended."""
        ...

    def start_worker(self, part: Partition) -> WorkerView:
        """Start a worker pinned to a partition just made."""
        ...

    def retire(self, worker: WorkerView) -> None:
        """Stop an idle worker for good and wait for its process to end."""
        ...

    def drain(self, workers: Iterable[WorkerView], on: bool = True) -> None:
        """Let these workers take no new task (`on`), or take tasks again."""
        ...

    def pause(self, worker: WorkerView, job: Any) -> None:
        """Ask `worker` to stop `job`, a checkpoint task it runs, at its next checkpoint."""
        ...

    def fail(self, failed: Sequence[tuple[Any, BaseException]]) -> None:
        """Take these waiting jobs out of the queue (those still in it) and fail each with its error."""
        ...

    def pump(self) -> None:
        """Hand the waiting tasks out again (a task whose move ended waits for no event that would)."""
        ...
