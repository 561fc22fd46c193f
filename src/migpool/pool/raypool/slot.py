"""The Ray kind of slot: the scheduler's slot whose worker is a Ray actor pinned to its node. Messages go to the
actor in batches and its answers come back in order; a stream task (or a checkpoint task) is driven from here
between its items (its checkpoints)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from ...errors import RemoteError
from ..api.providers import WorkerSpec
from ..scheduler.jobs import Job
from ..scheduler.slot import POLL_S, Slot
from ..wire.messages import Call, Checkpointed, RunTask, Stop, ToWorker, Want, Yielded
from .codec import InStore
from .nodes import node_affinity

if TYPE_CHECKING:
    from ..scheduler.core import Scheduler
    from .pool import RayPool

RAY_BATCH = 256  # most messages sent to an actor in one call
FETCH_WAIT_S = 30.0  # longest a slot waits for its actor's large results before stopping it
RAY_PREFETCH_BUDGET_S = 0.05  # keep about this much work queued at each actor (a call costs about a millisecond)


class RaySlot(Slot):
    """A Scheduler slot whose worker is a Ray actor: messages go out in batches, frames come back in order."""

    def __init__(self, sched: Scheduler, spec: WorkerSpec, pool: RayPool) -> None:
        super().__init__(sched, spec)
        self.pool = pool
        self.actor: Any = None
        self.node = pool.nodes[spec.node]
        self.fetched = threading.Condition()
        self.fetching = 0  # large results on their way from the actor's object store

    @property
    def pid(self) -> int:
        return self.stats.pid or 0

    def prefetch_depth(self) -> int:
        return max(8, min(RAY_BATCH, int(RAY_PREFETCH_BUDGET_S / self.avg_s)))

    def spawn(self) -> None:
        self.fresh()
        self.actor = self.pool.actor_class.options(
            num_cpus=0,
            num_gpus=0,
            max_restarts=0,
            max_concurrency=1,
            scheduling_strategy=node_affinity(self.node.node_id),
            runtime_env=self.pool.runtime_env(self.spec),
        ).remote(self.node.plugins, self.spec, len(self.pool.nodes))
        with self.sched.lock:
            closed = self.sched.closed
        if closed:  # the pool closed while this one started (a restart): it goes at once
            self.kill()
        refs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threads = self.sched.threads
        threads.start(f"{self.name}-writer", self._writer_loop, self.actor, self.writer_q, refs)
        threads.start(f"{self.name}-reader", self._reader_loop, self.actor, refs)

    def _writer_loop(self, actor: Any, wq: queue.SimpleQueue[ToWorker | None], refs: queue.SimpleQueue[Any]) -> None:
        """Messages to the actor in batches; a stream task goes alone, and its reader drives it (_drive)."""
        while True:
            msg = wq.get()
            if msg is None or isinstance(msg, Stop):
                refs.put(None)
                return
            batch = [msg]
            while len(batch) < RAY_BATCH and not _streams(batch[-1]):
                try:
                    more = wq.get_nowait()
                except queue.Empty:
                    break
                if more is None or isinstance(more, Stop) or _streams(more):
                    wq.put(more)  # the end goes last; a stream task starts the next batch
                    break
                batch.append(more)
            ref = actor.run.remote(batch)
            last = batch[-1]
            refs.put((last.tid, ref) if isinstance(last, RunTask) and last.streams else ref)

    def _reader_loop(self, actor: Any, refs: queue.SimpleQueue[Any]) -> None:
        import ray

        was_ready = False
        try:
            info = ray.get(actor.ready.remote())
            self.stats.pid = info["pid"]
            self.startup_failures = 0
            was_ready = True
            self.ready.set()
            self.sched.pump()
            while True:
                try:
                    ref = refs.get(timeout=POLL_S)
                except queue.Empty:
                    if self._past_deadline():
                        raise _KilledForTimeoutError from None
                    continue
                if ref is None:
                    return
                stream = None
                if isinstance(ref, tuple):
                    stream, ref = ref
                while not ray.wait([ref], timeout=POLL_S)[0]:
                    if self._past_deadline():
                        raise _KilledForTimeoutError
                for frame in ray.get(ref):
                    self.resolve(frame)
                if stream is not None:
                    self._drive(actor, stream)
                self.sched.pump()
        except _KilledForTimeoutError:
            how = "was stopped"
        except Exception as e:  # noqa: BLE001 - the actor or its node is gone: every job still ends once
            how = self._how(e)
        with self.sched.lock:
            self.ready.clear()
        self.writer_q.put(None)
        if self.stats.pid:
            self.pool.shared.gone(self.stats.pid)
        self.ended(was_ready, how)

    def _drive(self, actor: Any, tid: int) -> None:
        """Run a stream or checkpoint task's side here: take its items while its consumer has room, feed its input
        as it asks, pass its checkpoints on (dynamic MIG follows them, and may ask it to stop at one: a Pause,
        which reaches the actor between these calls), until its last frame (a stop at a checkpoint: Paused)."""
        import ray

        with self.sched.lock:
            job = self.outstanding[0] if self.outstanding and self.outstanding[0].id == tid else None
        while True:
            if self._past_deadline():
                raise _KilledForTimeoutError
            if job is not None and job.stream is not None and not job.stream.wait_room(POLL_S):
                continue
            items, wants, marks, final = ray.get(actor.take.remote(POLL_S))
            for item in items:
                self.resolve(Yielded(tid, item))
            for sid, n in wants.items():
                self.resolve(Want(tid, sid, n))
            for done, total in marks:
                self.resolve(Checkpointed(tid, done, total))
            if final is not None:
                self.resolve(final)
                return

    def deliver(self, job: Job, result: Any) -> None:
        """A large result comes from Ray's object store without holding up this actor's other answers."""
        if job.stream is None and isinstance(result, InStore):
            fut = job.future
            with self.fetched:
                self.fetching += 1

            def done(f: Any) -> None:
                try:
                    fut.set_result(f.result())
                except Exception as e:  # noqa: BLE001 - the object was lost with its node, say
                    fut.set_exception(RemoteError(f"the task's result could not be fetched from Ray: {e!r}"))
                with self.fetched:
                    self.fetching -= 1
                    self.fetched.notify_all()

            result.ref.future().add_done_callback(done)
            return
        super().deliver(job, result)

    def feed(self, job: Job, sid: int, n: int) -> None:
        """Send up to `n` items of the job's input stream `sid` (read on the job's feeding thread)."""
        actor = self.actor
        if actor is not None:
            self.sched.feed(job, sid, n, lambda feeds: actor.feed.remote(sid, feeds))

    def cancel(self, job: Job) -> None:
        if self.actor is not None:
            self.actor.cancel.remote(job.id)

    def credit(self, job: Job, n: int) -> None:
        """Nothing to send: the reader takes a stream's items only while its consumer has room."""

    def _past_deadline(self) -> bool:
        deadline = self.head_deadline()
        if deadline is not None and time.monotonic() >= deadline:
            self.timed_out = True
            self.kill()
            return True
        return False

    def _how(self, e: BaseException) -> str:
        if not self.pool.node_alive(self.node.node_id):
            return "was lost with its node (it left the Ray cluster)"
        text = str(e).strip().splitlines()
        detail = next(
            (line for line in text if "exit" in line.lower() or "killed" in line.lower()), text[0] if text else ""
        )
        return f"died ({type(e).__name__}: {detail.strip()[:200]})"

    def respawn(self) -> None:
        if not self.pool.node_alive(self.node.node_id):
            with self.sched.lock:
                self.sched.some_dead = True
                self.dead_reason = f"{self.spec.describe()} is gone: its node left the Ray cluster"
                self.ready.set()
            self.sched.fail_unservable()
            return
        self.spawn()

    def kill(self) -> None:
        with self.fetched:  # the actor owns its large results until they arrive here
            self.fetched.wait_for(lambda: self.fetching == 0, FETCH_WAIT_S)
        if self.actor is not None:
            import ray

            with contextlib.suppress(Exception):  # already gone
                ray.kill(self.actor, no_restart=True)

    def stop(self, timeout: float) -> None:
        """Retire the actor: its node waits for the process to end before its partition goes (RaySite)."""
        self.writer_q.put(Stop())
        self.kill()

    def wait_exit(self, timeout: float | None) -> None:
        """Nothing to wait for here: its node waits for the actor's process to end before its partition goes."""

    def call(self, msg: Call, peer: int) -> None:
        raise RuntimeError("a Ray actor's tasks call the pool's collections through their own actor, not the driver")


def _streams(msg: Any) -> bool:
    """Whether a message starts a task that streams (out, in or both) or has checkpoints: it runs on a thread of
    the actor, which the driver reaches between its items."""
    return type(msg) is RunTask and msg.streams != 0


class _KilledForTimeoutError(Exception):
    """The task at hand ran past its timeout: the actor was killed."""
