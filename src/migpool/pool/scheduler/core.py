"""The pool's queue and routing: submitted tasks wait here, in order, for a slot (slot.py) that serves them and has
room; a worker that dies has its jobs retried or failed there.

Every submitted task ends exactly once: with its result, its exception, a WorkerLostError (its worker died
while running it and no retry was left), a TaskTimeoutError, or cancellation when the pool is torn down.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any, Protocol

from ...errors import PluginError, PoolBrokenError, WorkerLostError, WorkerStartError
from ...mig.layout import parse_memory_mib
from ...observe import workload
from ..api import refs
from ..api.attempts import late, retrying
from ..api.providers import WorkerSpec
from ..api.refs import Ref
from ..api.task import Task
from ..shared.state import SharedState
from ..wire.messages import FEED_END, FEED_ERROR, FEED_ITEM, Feed, ForgetValue, Stop
from ..wire.remote_errors import as_task_error
from ..wire.segments import Codec, SharedMemoryCodec
from ..wire.streams import OutputStream, StreamResults, take_inputs
from .deadlines import QueueDeadlines
from .feeding import Send
from .feeding import feed as feed_job
from .jobs import Functions, Job, cancel_future, serves
from .process_slot import ProcessSlot
from .slot import POLL_S, Slot
from .spares import Spares, SpareSettings
from .threads import Spawner, Threads

__all__ = ["POLL_S", "Job", "Provisioner", "Scheduler", "Slot", "serves"]

STARTUP_TIMEOUT_S = 120.0
log = logging.getLogger("migpool.pool")
JOIN_S = 5.0  # how long close() waits for the pool's threads to end
FEED_JOIN_S = 1.0  # ... and for the threads that read iterator arguments (one blocked in user code is left)


def _no_iterator(args: tuple[Any, ...]) -> bool:
    for a in args:
        if hasattr(type(a), "__next__"):
            return False
    return True


_NONE: frozenset[int] = frozenset()
_NO_REFS: list[Ref] = []  # (never appended to: no Ref was made in this process)
_NO_INPUTS: list[Any] = []  # (never appended to: a task without iterator arguments)


def _size(data: Any) -> int:
    return int(getattr(data, "nbytes", 0))


def _fit(w: Slot, job: Job) -> tuple[int, float]:
    """Which serving worker takes a job: the least loaded, then for a min_memory task the partition that dynamic
    MIG ranks first for it (pool/sizing.py), else the smallest."""
    p = w.spec.partition
    if p is None or job.task.partition is not None or (job.task.need_mib is None and w.sched.provisioner is None):
        return len(w.outstanding), 0
    if w.sched.provisioner is not None:
        return len(w.outstanding), w.sched.provisioner.rank(job, w)
    return len(w.outstanding), p.memory_mib


def _refusal(task: Task[Any], workers: list[Slot]) -> PluginError:
    """Why no worker of the pool can run `task` (it names a node, a partition or memory none of them has)."""
    parts = sorted({w.spec.partition.profile for w in workers if w.spec.partition})
    if task.node is not None and not any(w.spec.node == task.node for w in workers):
        return PluginError(f"this pool has no node {task.node}")
    if task.need_mib is not None:
        sizes = sorted(
            {f"{w.spec.partition.profile} ({w.spec.partition.memory_mib} MiB)" for w in workers if w.spec.partition}
        )
        return PluginError(
            f"no partition of this pool has min_memory={task.min_memory}; partitions: "
            + (", ".join(sizes) or "none (no mig plugin)")
        )
    return PluginError(
        f"no worker runs on a {task.partition} partition; this pool's partitions: "
        + (", ".join(parts) if parts else "none (no mig plugin)")
    )


class Provisioner(Protocol):
    """Dynamic MIG's side of the scheduler (dynamic.DynamicMig): it admits tasks, ranks and holds workers for
    them, learns run times, and is woken when work waits."""

    def admit(self, task: Task[Any]) -> None: ...

    def wake(self) -> None: ...

    def rank(self, job: Job, worker: Slot) -> int: ...

    def hold(self, job: Job, idle: Slot, held: dict[int, float]) -> bool: ...

    def finished(self, job: Job, worker: Slot, seconds: float) -> None: ...

    def progress(self, job: Job, worker: Slot, done: float | None, total: float | None, now: float) -> None:
        """A checkpoint task reported a checkpoint (on the worker's reader thread)."""
        ...

    def paused(self, job: Job, worker: Slot) -> None:
        """A checkpoint task stopped at a checkpoint, as the provisioner asked: it waits in the queue to resume."""
        ...


class Scheduler:
    """The pool's queue and routing: jobs go, in order, each to the least-loaded worker that serves it. It owns
    every thread of the pool's workers (`threads`) and the one thread that starts their processes."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        default_retries: int = 0,
        slot: Callable[[Scheduler, WorkerSpec], Slot] | None = None,
        codec: Codec | None = None,
        spares: SpareSettings | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.codec: Codec = codec or SharedMemoryCodec()  # shared memory here, Ray's object store on Ray
        self._pack = self.codec.pack  # (looked up once: every submit calls it)
        self.shared = SharedState()  # the pool's collections (shared.py), served to its workers from here
        self.values: dict[int, Any] = {}  # stored values (put), packed, by their Ref's number
        self._forgotten: collections.deque[int] = collections.deque()  # refs that were dropped (from finalizers)
        self.pending: collections.deque[Job] = collections.deque()
        self.threads = Threads(on_error=self.thread_died)
        self.feeders = Threads(on_error=self.thread_died)  # the threads that read iterator arguments (feeding.py)
        self.failure: PoolBrokenError | None = None  # set when one of the pool's threads died of an error
        self._slot = slot or ProcessSlot
        self.workers = [self._slot(self, s) for s in specs]
        self.default_retries = default_retries
        self.closed = False
        self.some_dead = False  # a slot gave up starting its worker (its dead_reason says why)
        self.starting = True
        self._ids = itertools.count()
        self.provisioner: Provisioner | None = None  # dynamic MIG: admits tasks, woken when work waits
        self.functions = Functions()  # the tasks' functions, numbered and pickled once each
        self.spawner = Spawner("migpool-spawn", self.threads)
        self.spares = Spares(self, spares) if spares is not None else None  # warm workers (issue 47)
        self.deadlines = QueueDeadlines(self.threads, self.expire)  # the queued jobs' queue_timeouts

    def launch(self, argv: list[str], **popen: Any) -> subprocess.Popen[bytes] | None:
        """Start a worker process, from the pool's spawning thread; None once the pool has shut down."""
        try:
            return self.spawner.call(lambda: subprocess.Popen(argv, **popen))
        except RuntimeError:  # the spawning thread was stopped: the pool is closed
            if self.closed:
                return None
            raise

    def restart(self, w: Slot) -> None:
        """Start `w`'s worker again, from the spawning thread (the caller, a reader thread, is about to end)."""

        def again() -> None:
            if not self.closed:  # the pool closed meanwhile: nothing to restart
                w.respawn()

        with contextlib.suppress(RuntimeError):  # the spawner stopped: the pool is closed
            self.spawner.post(again)

    def thread_died(self, name: str, e: BaseException) -> None:
        """One of the pool's threads ended with an error: the pool is broken. Every task not yet ended fails with
        that error, and so do later submits and close()."""
        err = PoolBrokenError(f"migpool's thread {name} died: {type(e).__name__}: {e}; the pool can run no more tasks")
        err.__cause__ = e
        with self.lock:
            if self.failure is None:
                self.failure = err
            jobs = list(self.pending) + [j for w in self.workers for j in w.outstanding]
            self.pending.clear()
            for w in self.workers:
                w.outstanding.clear()
        for j in jobs:
            if not j.future.done():
                with contextlib.suppress(Exception):  # set meanwhile by another thread
                    j.future.set_exception(err)

    def check(self) -> None:
        """Raise the error that broke the pool, if one did."""
        if self.failure is not None:
            raise self.failure

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        for w in self.workers:
            w.spawn()
        if self.spares is not None:
            self.spares.start()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            if not w.ready.wait(max(0.0, deadline - time.monotonic())):
                self.shutdown(kill=True)
                raise WorkerLostError(f"{w.spec.describe()} did not start within {timeout:.0f}s")
            if w.dead_reason:
                reason = w.dead_reason
                self.shutdown(kill=True)
                raise WorkerLostError(reason)
        self.starting = False

    def submit(self, task: Task[Any], retries: int | None = None) -> Future[Any]:
        """Queue a task; its future (sent again after a failed attempt while its retry policy says so)."""
        return retrying(lambda: self.submit_once(task, retries), task.retry)

    def expire(self, job: Job) -> None:
        """A job's queue_timeout passed: if still queued (no worker took it), it fails now, unrun."""
        with self.lock:
            if job not in self.pending:
                return
            self.pending.remove(job)
        with contextlib.suppress(Exception):  # (it ended meanwhile)
            job.future.set_exception(late(job.task.queue_timeout or 0.0))

    def submit_once(self, task: Task[Any], retries: int | None = None) -> Future[Any]:
        self.check()
        if self.closed:
            raise RuntimeError("this Compute is closed; submit tasks inside its `with` block")
        if task.min_memory is not None and task.need_mib is None:
            task = dataclasses.replace(task, need_mib=parse_memory_mib(task.min_memory))
        if self.provisioner is not None:
            self.provisioner.admit(task)
        elif (task.partition is not None or task.need_mib is not None or task.node is not None) and not any(
            w.serves(task) for w in self.workers
        ):  # (a task that names nothing runs on any worker)
            raise _refusal(task, self.workers)
        fid, streams = self.functions.number(task.fn)
        args, kwargs, inputs = task.args, task.kwargs, _NO_INPUTS
        if kwargs or not _no_iterator(args):  # (an iterator argument streams)
            args, kwargs, inputs = take_inputs(args, kwargs)
        named, before = refs.noting() if refs.made[0] else (_NO_REFS, None)
        try:
            payload = self._pack((args, kwargs))
        except Exception as e:
            raise TypeError(
                f"{task!r}: its arguments could not be pickled ({type(e).__name__}: {e}); pass values that pickle, "
                "or make what cannot travel inside the task"
            ) from e
        finally:
            if named is not _NO_REFS:
                refs.stop_noting(before)
        self.check_refs(named)
        n = retries if retries is not None else (task.retries if task.retries is not None else self.default_retries)
        fut: Future[Any] = Future()
        vids = frozenset(r.vid for r in named) if named else _NONE
        job = Job(next(self._ids), task, fut, fid, payload, n, vids, None, inputs)
        caller: Future[Any] | None = None
        if streams and not task.checkpoint:  # (a checkpoint task's items are its checkpoints, not a stream)
            job.stream = stream = OutputStream(
                self.codec.unpack, lambda k: self.credit(job, k), lambda: self.cancel_stream(job)
            )
            fut.add_done_callback(lambda f: stream.finish(f.exception() if not f.cancelled() else CancelledError()))
            caller = Future()
            caller.set_result(StreamResults(stream))
        with self.lock:
            self.pending.append(job)
            some_dead = self.some_dead and self.provisioner is None
        if task.queue_timeout is not None:
            self.deadlines.add(job, task.queue_timeout)
        if some_dead:  # a slot gave up starting its worker: what only it could run fails now, never waits
            self.fail_unservable()
        self.pump()
        return fut if caller is None else caller

    # --- stored values and streams ---
    def put(self, value: Any) -> Ref:
        """Store `value` once for any number of tasks; it is freed when the Ref is dropped or the pool closes."""
        self.check()
        if self.closed:
            raise RuntimeError("this Compute is closed; put values inside its `with` block")
        data = self.codec.store(value)
        ref = Ref(id(self), len(data) if isinstance(data, bytes) else _size(data))
        with self.lock:
            self.values[ref.vid] = data
        weakref.finalize(ref, self._forgotten.append, ref.vid)
        return ref

    def _forget(self) -> None:
        """Free the stored values whose Refs were dropped, here and in the workers that hold them (lock held)."""
        while self._forgotten:
            vid = self._forgotten.popleft()
            self.values.pop(vid, None)
            for w in self.workers:
                if vid in w.sent_values:
                    w.sent_values.discard(vid)
                    w.writer_q.put(ForgetValue(vid))

    def check_refs(self, named: list[Ref]) -> None:
        """PluginError unless each Ref is one of this pool's stored values."""
        for r in named:
            if r.owner != id(self) or r.vid not in self.values:
                raise PluginError(
                    f"{r!r} was made by another pool, or by this one and then freed: pass a Ref only to tasks of "
                    "the pool whose put() made it, while that pool is open"
                )

    def read_input(self, job: Job, sid: int, n: int, store: Callable[[int], None] | None = None) -> list[Feed]:
        """Up to `n` items of the job's iterator argument `sid`, packed, then its end or the error it raised. The
        stored values that an item's Refs name go to `store` first (None: such an item is refused)."""
        out: list[Feed] = []
        it = job.inputs[sid] if sid < len(job.inputs) else None
        while it is not None and len(out) < n:
            try:
                item = next(it)
                data, named = refs.pack_naming(self.codec.pack, item)
                if named:
                    self.check_refs(named)
                    if store is None:
                        raise PluginError("a Ref inside an iterator argument's items travels on local pools only")
                    for r in named:
                        store(r.vid)
                out.append(Feed(job.id, sid, data, FEED_ITEM))
            except StopIteration:
                out.append(Feed(job.id, sid, None, FEED_END))
                it = job.inputs[sid] = None
            except Exception as e:  # noqa: BLE001 - raised in the task, where it reads the stream
                out.append(Feed(job.id, sid, self.codec.pack(as_task_error(e)), FEED_ERROR))
                it = job.inputs[sid] = None
        return out

    def feed(self, job: Job, sid: int, n: int, send: Send, store: Callable[[int], None] | None = None) -> None:
        """Read up to `n` items of the job's iterator argument `sid` on its feeding thread, and `send` them."""
        feed_job(job, self.read_input, self.feeders, sid, n, send, store)

    def credit(self, job: Job, n: int) -> None:
        with self.lock:
            w = next((w for w in self.workers if job in w.outstanding), None)
        if w is not None:
            w.credit(job, n)

    def cancel_stream(self, job: Job) -> None:
        """The consumer stopped reading a stream: a job still queued ends now, a running one is told to stop."""
        with self.lock:
            if job in self.pending:
                self.pending.remove(job)
                w = None
            else:
                w = next((w for w in self.workers if job in w.outstanding), None)
                if w is None:
                    return
                w.bound_cleanup(job)
        if w is None:
            cancel_future(job.future, "the stream was closed before its task ran")
        else:
            w.cancel(job)

    def pump(self) -> None:
        """Hand pending jobs, in order, each to the least-loaded worker that serves its partition and has room."""
        self.codec.tidy()
        with self.lock:
            if self._forgotten:
                self._forget()
            pending = self.pending
            if not pending:
                return
            workers = self.workers
            caps = [w.capacity() for w in workers]  # (each worker's room, counted down as jobs go to it)
            room = sum(c > 0 for c in caps)
            provisioner = self.provisioner
            i = 0
            held: dict[int, float] = {}  # dynamic MIG: busy workers that jobs wait for, and when each is taken until
            while room and i < len(pending):
                job = pending[i]
                task = job.task
                best = None
                at = 0
                best_fit: tuple[int, float] = (0, 0.0)
                # a stream goes only to an idle worker (or a free thread of one), and so does a task with a
                # queue_timeout (queued behind another at a worker, it could not leave when its time is up)
                alone = job.stream is not None or task.queue_timeout is not None
                for k, w in enumerate(workers):
                    if caps[k] > 0 and w.serves(task) and not (alone and len(w.outstanding) >= w.threads):
                        fit = _fit(w, job)
                        if best is None or fit < best_fit:
                            best, at, best_fit = w, k, fit
                if best is None:
                    if provisioner is not None:
                        provisioner.wake()
                    i += 1
                    continue
                if provisioner is not None and provisioner.hold(job, best, held):
                    i += 1  # a busy partition of a faster size will finish it sooner: it waits for that one
                    continue
                del pending[i]
                if job.attempts == 0 and not job.moves and not job.future.set_running_or_notify_cancel():
                    continue
                if job.moves and job.future.done():  # cancelled while it waited to resume after a move
                    continue
                best.send(job, self.functions.pickled[job.fid])
                caps[at] = 0 if alone and best.threads == 1 else caps[at] - 1  # (a stream runs alone, or in a thread)
                if caps[at] <= 0:
                    room -= 1
            if not room and i < len(pending) and provisioner is not None:
                provisioner.wake()

    def add_worker(self, spec: WorkerSpec) -> Slot:
        """Start one more worker (dynamic MIG); it takes jobs once ready."""
        w = self._slot(self, spec)
        with self.lock:
            if self.closed:
                raise RuntimeError("the pool is closed")
            self.workers.append(w)
        w.spawn()
        return w

    def retire(self, w: Slot, timeout: float = 10.0) -> None:
        """Stop an idle worker for good (dynamic MIG frees its partition) and wait for its process to end."""
        with self.lock:
            w.draining = w.retired = True
            if w in self.workers:
                self.workers.remove(w)
        w.stop(timeout)

    def stats(self) -> dict[str, Any]:
        """Per-worker counts, busy time and last error, with what is running and queued now."""
        with self.lock:
            workers = []
            for w in self.workers:
                w.stats.running = min(len(w.outstanding), w.threads)
                w.stats.queued = max(0, len(w.outstanding) - w.threads)
                w.stats.task = getattr(w.outstanding[0].task.fn, "__qualname__", None) if w.outstanding else None
                workers.append(w.stats.as_dict())
            out: dict[str, Any] = dict(pid=os.getpid(), time=time.time(), pending=len(self.pending), workers=workers)
        if self.spares is not None:
            out["spares"] = self.spares.stats()
        return out

    def fail_unservable(self) -> None:
        """Fail jobs that no live worker can run (their workers could not be started)."""
        with self.lock:
            alive = [w for w in self.workers if not w.dead_reason]
            keep: collections.deque[Job] = collections.deque()
            doomed: list[Job] = []
            for j in self.pending:
                (keep if any(w.serves(j.task) for w in alive) else doomed).append(j)
            self.pending = keep
        reasons = "; ".join(w.dead_reason for w in self.workers if w.dead_reason)
        for j in doomed:
            if not j.future.done():
                j.future.set_exception(WorkerStartError(f"no worker can run {j.task!r}: {reasons}"))

    def wait_idle(self) -> None:
        """Wait until every task has ended; streams that nobody reads to the end are cut first (their consumers
        get CancelledError, never a silent end)."""
        while True:
            with self.lock:
                jobs = list(self.pending) + [j for w in self.workers for j in w.outstanding]
            for j in jobs:
                if j.stream is not None and not j.future.done():
                    j.stream.cut()
            with self.lock:
                futs = [j.future for j in self.pending] + [j.future for w in self.workers for j in w.outstanding]
                futs = [f for f in futs if not f.done()]
            if not futs:
                return
            for f in futs:
                try:
                    f.exception()
                except CancelledError:
                    pass

    def shutdown(self, kill: bool = False, timeout: float = 5.0) -> None:
        """Stop every worker (after the task at hand, unless `kill`), end every future not yet ended, and join
        the pool's threads (each within JOIN_S)."""
        with self.lock:
            if self.closed and not kill:
                return
            self.closed = True
            pending = list(self.pending)
            self.pending.clear()
        for j in pending:
            cancel_future(j.future, "the pool closed before this task ran")
        if not kill:
            for w in self.workers:
                w.writer_q.put(Stop())
            deadline = time.monotonic() + timeout
            for w in self.workers:
                w.wait_exit(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.kill()
        for w in self.workers:
            w.wait_exit(None)
        if self.spares is not None:
            self.spares.close()
        self.spawner.stop()
        self.deadlines.stop()
        with self.lock:
            jobs = [j for w in self.workers for j in w.outstanding]
            for w in self.workers:
                w.outstanding.clear()
            self.values.clear()
        for j in jobs:
            cancel_future(j.future)
        for w in self.workers:
            w.writer_q.put(None)  # a writer whose reader never started (the pool closed as it spawned)
        stuck = self.threads.join(JOIN_S) + self.feeders.join(FEED_JOIN_S)
        self.codec.close()
        workload.close_all()  # the pool's records are written, and the writer's thread joined (a later one restarts it)
        if stuck:
            log.warning("migpool: threads still running %.0f s after the pool closed: %s", JOIN_S, ", ".join(stuck))
