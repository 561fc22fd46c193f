"""The parent side of the worker processes: start them, feed them tasks, collect results, restart the dead.

Every submitted task ends exactly once: with its result, its exception, a WorkerLostError (its worker died
while running it and no retry was left), a TaskTimeoutError, or cancellation when the pool is torn down.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import itertools
import logging
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any, Protocol

from ...errors import PluginError, PoolBrokenError, RemoteError, TaskTimeoutError, WorkerLostError, WorkerStartError
from ...mig.layout import parse_memory_mib
from ...observe.poolstats import WorkerStats
from ..api import refs
from ..api.providers import WorkerSpec
from ..api.refs import Ref
from ..api.task import Task
from ..shared.delivery import Lent, Liveness
from ..shared.state import Holder, SharedState, Waiter
from ..wire.messages import (
    CHECKPOINTS,
    FEED_END,
    FEED_ERROR,
    FEED_ITEM,
    ONE_TASK_ENV,
    STREAM_IN,
    STREAM_OUT,
    Answer,
    Call,
    Cancel,
    Credit,
    DefineFunction,
    Feed,
    ForgetValue,
    FromWorker,
    Pause,
    Paused,
    Progress,
    Ready,
    Released,
    RunTask,
    Stop,
    StoreValue,
    TaskDone,
    TaskFailed,
    ToWorker,
    Want,
    Withdraw,
    Yielded,
)
from ..wire.pickling import cloud_dumps
from ..wire.protocol import End, channel, read_frame, write_frame
from ..wire.remote_errors import ExceptionDescription, as_task_error, rebuild
from ..wire.segments import Codec, SharedMemoryCodec
from ..wire.streams import OutputStream, StreamResults, take_inputs
from ..wire.tracebacks import RemoteTraceback, format_chain
from .threads import Spawner, Threads

MAX_PREFETCH = 32
PREFETCH_BUDGET_S = 0.002  # keep about this much work queued in each worker's pipe
STARTUP_TIMEOUT_S = 120.0
POLL_S = 0.1  # how often an idle reader looks for newly sent jobs' deadlines
log = logging.getLogger("migpool.pool")
RECENT_FUNCTIONS = 256  # function objects remembered to skip re-pickling
JOIN_S = 5.0  # how long close() waits for the pool's threads to end


def serves(task: Task[Any], node: int, profile: str | None, memory_mib: float | None) -> bool:
    """Whether a worker on `node`, pinned to a partition of `profile` with `memory_mib` (None: no partition), may
    run `task`: of the profile it names, holding the memory it asks for, on the node it names."""
    if task.node is not None and task.node != node:
        return False
    if task.partition is not None:
        return profile == task.partition
    return task.need_mib is None or (memory_mib is not None and memory_mib >= task.need_mib)


class Job:
    """A submitted task on its way: its future, its function's id, its packed arguments, the stored values they
    name, its streams (a generator task's output, its iterator arguments) and its attempts."""

    __slots__ = (
        "id",
        "task",
        "future",
        "fid",
        "payload",
        "attempts",
        "retries",
        "started",
        "vids",
        "stream",
        "inputs",
        "resume",
        "progress",
        "pausing",
        "moves",
    )

    def __init__(
        self,
        jid: int,
        task: Task[Any],
        future: Future[Any],
        fid: int,
        payload: Any,
        retries: int,
        vids: frozenset[int] = frozenset(),
        stream: OutputStream | None = None,
        inputs: list[Any] | None = None,
    ) -> None:
        self.id, self.task, self.future, self.fid, self.payload = jid, task, future, fid, payload
        self.attempts = 0
        self.retries = retries
        self.started = 0.0
        self.vids = vids
        self.stream = stream  # a generator task's items, on their way to the caller
        self.inputs = inputs or []  # its iterator arguments, read as the task asks (None once one ended)
        self.resume: Any = None  # a checkpoint task's packed state to resume from (after a move), or None
        self.progress: tuple[float | None, float | None, float] | None = None  # its last (done, total, when)
        self.pausing = False  # asked to stop at its next checkpoint
        self.moves = 0


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


def _fit(w: WorkerProcess, job: Job) -> tuple[int, float]:
    """Which serving worker takes a job: the least loaded, then for a min_memory task the partition that dynamic
    MIG ranks first for it (pool/sizing.py), else the smallest."""
    p = w.spec.partition
    if p is None or job.task.partition is not None or (job.task.need_mib is None and w.sched.provisioner is None):
        return len(w.outstanding), 0
    if w.sched.provisioner is not None:
        return len(w.outstanding), w.sched.provisioner.rank(job, w)
    return len(w.outstanding), p.memory_mib


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "did not exit"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return f"was killed by signal {-rc} ({name})"
    return f"exited with code {rc}"


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process `pid` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class Outbox:
    """A worker process's end of the channel from the parent: whole frames, one at a time, from its writer thread,
    or, for the answer to a task's call on a pool collection, straight from the thread that has the answer (the
    worker is waiting for it, reading, so the write cannot stall). Nothing is written once it is closed.

    An answer that hands something over (a queue's item) comes with what undoes it, which runs if the worker
    never reads it (shared/delivery.py); `alive()` tells a collection whether the worker can take an answer."""

    __slots__ = ("end", "pid", "lock", "closed", "lent", "liveness")

    def __init__(self, end: End, pid: int) -> None:
        self.end, self.pid = end, pid
        self.lock = threading.Lock()
        self.closed = False
        self.lent = Lent(end.fd)
        self.liveness = Liveness(pid)

    def send(self, msg: ToWorker, undo: Callable[[], None] | None = None) -> None:
        with self.lock:
            if not self.closed:
                try:
                    self.lent.wrote(write_frame(self.end, msg, self.pid), undo)
                    return
                except OSError:
                    if undo is None:
                        raise
        if undo is not None:
            undo()

    def alive(self) -> bool:
        return not self.closed and self.liveness.alive()

    def close(self) -> None:
        """Write no more (the worker has exited or was killed); undo the answers it never read."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            undo = self.lent.unread()  # (counted before the pipe closes)
            self.end.close()
        self.liveness.close()
        for u in undo:
            u()


class WorkerProcess:
    """One worker slot: its current process, pipes and threads; restarted on the same partition when it dies.

    Its threads (reader, writer, stderr) belong to its scheduler's `threads`; a restart runs on the scheduler's
    spawning thread, never on the reader thread that saw the worker die."""

    def __init__(self, sched: Scheduler, spec: WorkerSpec) -> None:
        self.sched = sched
        self.spec = spec
        self.outstanding: collections.deque[Job] = collections.deque()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()
        self.dead_reason: str | None = None  # set when it failed to start and gave up
        self.sent_fns: set[int] = set()
        self.sent_values: set[int] = set()  # the stored values (refs) this worker holds
        self.writer_q: queue.SimpleQueue[ToWorker | None] = queue.SimpleQueue()
        self.outbox: Outbox | None = None  # set once its process runs
        self.one_task = spec.env.get(ONE_TASK_ENV) == "1"  # Worker(reuse_processes=False): a process per task
        self.done_one = False  # its process ran its one task (and is ending)
        self.avg_s = 0.01
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.startup_failures = 0
        self.timed_out = False
        self.restarts = 0
        self.draining = False  # takes no new job (dynamic MIG is about to free its partition)
        self.retired = False  # removed from the pool: not restarted when its process ends
        p = spec.partition
        self.stats = WorkerStats(
            spec.index,
            p.uuid if p else None,
            p.profile if p else None,
            p.gpu_index if p else None,
            p.gi_id if p else None,
        )

    @property
    def name(self) -> str:
        """A short name for its threads: 'migpool-w3' (node 0), 'migpool-n1w3'."""
        return f"migpool-{f'n{self.spec.node}' if self.spec.node else ''}w{self.spec.index}"

    # --- lifecycle ---
    def spawn(self) -> None:
        p_r, c_w = channel()  # worker -> parent
        c_r, p_w = channel()  # parent -> worker
        env = dict(self.spec.env, MIGPOOL_PARENT_PID=str(os.getpid()))
        self.ready.clear()
        self.sent_fns = set()
        self.sent_values = set()
        self.timed_out = False
        self.done_one = False
        self.writer_q = queue.SimpleQueue()
        try:
            proc = self.sched.launch(
                [self.spec.python, "-m", "migpool.pool.worker", c_r.spec(), c_w.spec()],
                env=env,
                pass_fds=(*c_r.fds(), *c_w.fds()),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the parent only; the parent stops the workers
            )
        finally:
            c_r.close()
            c_w.close()
        if proc is None:  # the pool has shut down
            p_r.close()
            p_w.close()
            return
        with self.sched.lock:
            self.proc = proc
            closed = self.sched.closed
        if closed:  # the pool closed while this one started (a restart): it goes at once
            self.kill()
        wq = self.writer_q
        self.outbox = outbox = Outbox(p_w, proc.pid)
        threads = self.sched.threads
        threads.start(f"{self.name}-stderr", self._drain_stderr, proc)
        threads.start(f"{self.name}-writer", self._writer, outbox, wq)
        threads.start(f"{self.name}-reader", self._reader, proc, p_r, wq)

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode(errors="replace")
            self.stderr_tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
        proc.stderr.close()

    def _writer(self, outbox: Outbox, wq: queue.SimpleQueue[ToWorker | None]) -> None:
        try:
            while True:
                msg = wq.get()
                if msg is None:
                    break
                outbox.send(msg)
                msg = None  # a segment it holds goes back to the pool now, not when the next message comes
        except OSError:
            pass
        finally:
            outbox.close()

    def head_deadline(self) -> float | None:
        """When the task running now must end (its timeout), or None."""
        with self.sched.lock:
            if not self.outstanding:
                return None
            head = self.outstanding[0]
            return head.started + head.task.timeout if head.task.timeout else None

    def _reader(self, proc: subprocess.Popen[bytes], fd: End, wq: queue.SimpleQueue[ToWorker | None]) -> None:
        """Answers from the worker, until it exits. Its exit is seen from the process itself (a pidfd, else a poll
        of its status), not from its pipe, which a process it forked may hold open."""
        pidfd = _pidfd(proc.pid)

        def release(sid: int, reusable: bool) -> None:  # a segment of this worker's was unmapped here
            wq.put(Released([(sid, reusable)]))

        try:
            first = read_frame(fd, release)
            if not isinstance(first, Ready):
                raise EOFError
            self.stats.pid = proc.pid
            self.startup_failures = 0
            self.ready.set()
            self.sched.pump()
            watch = [fd.fd] if pidfd is None else [fd.fd, pidfd]
            while True:
                deadline = self.head_deadline()
                wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                ready = select.select(watch, [], [], wait)[0] if wait > 0 else []
                if fd.fd in ready:
                    msg = read_frame(fd, release)
                    self.resolve(msg, proc.pid)
                    if type(msg) is TaskDone or type(msg) is TaskFailed:  # room for the next job
                        self.sched.pump()
                    msg = None
                    continue
                if ready or (pidfd is None and proc.poll() is not None):  # exited: take what it wrote first
                    while select.select([fd.fd], [], [], 0)[0]:
                        self.resolve(read_frame(fd, release), proc.pid)
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    self.timed_out = True
                    self.kill()
                    break
        except (EOFError, OSError):
            pass
        finally:
            wq.put(None)
            fd.close()
            if pidfd is not None:
                os.close(pidfd)
        self._on_exit(proc)

    def resolve(self, msg: FromWorker, peer: int = 0) -> None:
        """A task's answer came back: end its future (a stream's item or request goes to its job; what the
        worker unmapped goes back to the pool's segments; a task paused at a checkpoint waits to resume)."""
        if not isinstance(msg, (TaskDone, TaskFailed)):  # (the usual kinds go by with one check)
            if isinstance(msg, Paused):
                self.paused(msg)
            else:
                self._between(msg, peer)
            return
        now = time.monotonic()
        with self.sched.lock:
            if self.one_task:  # its process ends after this task: no job goes to it until its successor is ready
                self.ready.clear()
                self.done_one = True
            job = self.outstanding.popleft()
            self.avg_s = 0.8 * self.avg_s + 0.2 * max(now - job.started, 1e-7)
            if self.outstanding:
                self.outstanding[0].started = now
            self.stats.finished(now - job.started, None if isinstance(msg, TaskDone) else msg.text)
        provisioner = self.sched.provisioner
        if isinstance(msg, TaskDone):
            if provisioner is not None:
                provisioner.finished(job, self, now - job.started)
            self.deliver(job, msg.result)
            return
        job.future.set_exception(remote_exception(msg, self.spec.describe()))

    def paused(self, msg: Paused) -> None:
        """The task stopped at a checkpoint, as asked: it waits at the front of the queue, to resume from it on
        the partition dynamic MIG makes for it (or, should that fail, on any that serves it)."""
        now = time.monotonic()
        with self.sched.lock:
            job = self.outstanding.popleft()
            if self.outstanding:
                self.outstanding[0].started = now
            self.stats.finished(now - job.started, None)
            job.resume, job.pausing = msg.state, False
            job.moves += 1
            job.attempts -= 1  # a move is no attempt: its retries stay for failures
            self.sched.pending.appendleft(job)
        provisioner = self.sched.provisioner
        if provisioner is not None:
            provisioner.paused(job, self)
        self.sched.pump()

    def pause(self, job: Job) -> None:
        """Ask the worker to stop `job` (a checkpoint task it runs) at its next checkpoint (lock held)."""
        job.pausing = True
        self.writer_q.put(Pause(job.id))

    def _between(self, msg: FromWorker, peer: int) -> None:
        """What a worker sends while a task runs: a call on a pool collection, a stream's item or request, segments
        it unmapped."""
        if isinstance(msg, Call):
            self.call(msg, peer)
            return
        if isinstance(msg, Withdraw):  # (answered with TIMED_OUT, unless its answer went already)
            self.sched.shared.withdraw(Holder(peer, msg.thread), msg.cid)
            return
        if isinstance(msg, Released):
            self.sched.codec.released(msg.items, peer)
            return
        if isinstance(msg, Progress):
            self._progress(msg)
            return
        if not isinstance(msg, (Yielded, Want)):
            return
        with self.sched.lock:
            job = self.outstanding[0] if self.outstanding else None
        if job is None or job.id != msg.tid:
            return
        if isinstance(msg, Want):
            self.feed(job, msg.sid, msg.n)
        elif job.stream is not None:
            job.stream.push(msg.item)

    def _progress(self, msg: Progress) -> None:
        now = time.monotonic()
        with self.sched.lock:
            job = self.outstanding[0] if self.outstanding else None
            if job is None or job.id != msg.tid:
                return
            job.progress = (msg.done, msg.total, now)
        provisioner = self.sched.provisioner
        if provisioner is not None:
            provisioner.progress(job, self, msg.done, msg.total, now)

    def call(self, msg: Call, peer: int) -> None:
        """A task's call on a pool collection: answered now, or (a wait) from the call that readies it."""
        outbox, cid, shared = self.outbox, msg.cid, self.sched.shared  # (this process's outbox: a later answer
        assert outbox is not None  # never reaches its successor; made before its reader started)

        def answer(ok: bool, value: Any) -> None:  # straight to the worker, which waits for it, reading
            with contextlib.suppress(OSError):  # it died meanwhile (a queue's item goes back: undo_of)
                outbox.send(Answer(cid, ok, value), shared.undo_of(msg.kind, msg.name, msg.op, value) if ok else None)

        shared.call(Waiter(Holder(peer, msg.thread), cid, answer, outbox.alive), msg.kind, msg.name, msg.op, msg.args)

    def deliver(self, job: Job, result: Any) -> None:
        """End a job's future with its packed result (a stream's end: None)."""
        if job.stream is not None:
            job.future.set_result(None)
            return
        try:
            job.future.set_result(pickle.loads(result) if type(result) is bytes else self.sched.codec.unpack(result))
        except Exception as e:  # noqa: BLE001
            job.future.set_exception(RemoteError(f"the task's result could not be unpickled here: {e!r}"))

    def feed(self, job: Job, sid: int, n: int) -> None:
        """Send up to `n` items of the job's input stream `sid` (read here, on this worker's reader thread)."""
        for f in self.sched.read_input(job, sid, n, self.store):
            self.writer_q.put(f)

    def store(self, vid: int) -> None:
        """Send stored value `vid` unless this worker holds it (before the input item that names it)."""
        with self.sched.lock:
            if vid not in self.sent_values:
                self.sent_values.add(vid)
                self.writer_q.put(StoreValue(vid, self.sched.values[vid]))

    def cancel(self, job: Job) -> None:
        """Stop the job's stream on this worker (its consumer stopped early)."""
        self.writer_q.put(Cancel(job.id))

    def credit(self, job: Job, n: int) -> None:
        self.writer_q.put(Credit(job.id, n))

    def _on_exit(self, proc: subprocess.Popen[bytes]) -> None:
        sched = self.sched
        with sched.lock:  # from here no job is handed to this worker until its replacement is ready
            was_ready = self.ready.is_set() or self.done_one
            self.ready.clear()
        rc = proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what its tasks left running in its process group ends with it
        self.sched.codec.peer_gone(proc.pid)
        self.sched.shared.gone(proc.pid)  # its waiting calls go, the pool locks it held are released
        self.ended(was_ready, _exit_text(rc), rc)

    def ended(self, was_ready: bool, how: str, rc: int | None = None) -> None:
        """The worker is gone (`how`: 'exited with code 3', 'was lost with its node', ...): end or requeue its jobs,
        then start a replacement from the spawning thread (or give up on this slot)."""
        sched = self.sched
        with sched.lock:
            jobs = list(self.outstanding)
            self.outstanding.clear()
            if self.retired:
                for j in jobs:  # a retired worker is idle; should one have slipped in, it runs elsewhere
                    sched.pending.appendleft(j)
                return
            if sched.closed:
                for j in jobs:
                    _cancel(j.future)
                return
            head, rest = (jobs[0], jobs[1:]) if jobs else (None, [])
            for j in reversed(rest):  # never started: back to the front of the queue, in order
                sched.pending.appendleft(j)
            failure: BaseException | None = None
            if head is not None:
                self.stats.finished(
                    time.monotonic() - head.started,
                    f"timed out after {head.task.timeout}s" if self.timed_out else f"worker {how}",
                    lost=True,
                )
                if self.timed_out:
                    failure = TaskTimeoutError(
                        f"{head.task!r} ran past its timeout of {head.task.timeout}s on "
                        f"{self.spec.describe()}; the worker was stopped and restarted"
                    )
                elif head.attempts <= head.retries and not (head.stream is not None and head.stream.started):
                    sched.pending.appendleft(head)
                else:
                    failure = self._lost(head, how, rc)
            if not was_ready:
                self.startup_failures += 1
            give_up = self.startup_failures >= 3 or sched.starting
            if give_up:
                sched.some_dead = True
                self.dead_reason = f"{self.spec.describe()} could not start: it {how}" + (
                    ". Its last output:\n  " + "\n  ".join(self.stderr_tail) if self.stderr_tail else ""
                )
                self.ready.set()
        if failure is not None and head is not None:
            head.future.set_exception(failure)
        if give_up:
            sched.fail_unservable()
            return
        if not self.done_one:  # (a process per task ends by design: that is no restart)
            self.restarts += 1
        sched.restart(self)

    def respawn(self) -> None:
        """Start this slot's worker again (on the scheduler's spawning thread)."""
        self.spawn()

    def _lost(self, job: Job, how: str, rc: int | None) -> WorkerLostError:
        e = WorkerLostError(
            f"{self.spec.describe()} died while running {job.task!r}: it {how}"
            + (f"; tried {job.attempts} times" if job.attempts > 1 else "")
            + ". The worker was restarted on the same partition."
        )
        e.worker = self.spec.index  # type: ignore[attr-defined]  # documented extra attributes
        e.partition = self.spec.partition  # type: ignore[attr-defined]
        e.exitcode = rc  # type: ignore[attr-defined]
        return e

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def stop(self, timeout: float) -> None:
        """Ask the worker to exit once its task is done; wait up to `timeout` for it, then kill it."""
        self.writer_q.put(Stop())
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait()

    # --- scheduling (called with the scheduler lock held) ---
    def capacity(self) -> int:
        if not self.ready.is_set() or self.dead_reason or self.draining:
            return 0
        if self.outstanding and self.outstanding[0].stream is not None:
            return 0  # a stream runs alone: nothing waits behind a consumer
        if self.sched.provisioner is not None or self.one_task:
            depth = 1  # dynamic MIG: a task that waits may get a partition of its own rather than queue here
        else:  # (one task per process: the next one goes to the next process)
            depth = max(2, self.spec.buffer + 1, min(MAX_PREFETCH, int(PREFETCH_BUDGET_S / self.avg_s)))
        return depth - len(self.outstanding)

    def serves(self, task: Task[Any]) -> bool:
        if task.node is None and task.partition is None and task.need_mib is None:
            return True  # (the usual task: any worker serves it)
        p = self.spec.partition
        return serves(task, self.spec.node, p.profile if p else None, p.memory_mib if p else None)

    def send(self, job: Job, fn_bytes: bytes) -> None:
        job.attempts += 1
        self.stats.tasks_started += 1
        if not self.outstanding:
            job.started = time.monotonic()
        self.outstanding.append(job)
        if job.fid not in self.sent_fns:
            self.sent_fns.add(job.fid)
            self.writer_q.put(DefineFunction(job.fid, fn_bytes))
        if job.vids:
            for vid in job.vids - self.sent_values:  # each stored value reaches a worker once
                self.sent_values.add(vid)
                self.writer_q.put(StoreValue(vid, self.sched.values[vid]))
        streams = (STREAM_OUT if job.stream is not None else 0) | (STREAM_IN if job.inputs else 0)
        if job.task.checkpoint:
            self.writer_q.put(RunTask(job.id, job.fid, job.payload, streams | CHECKPOINTS, job.resume))
            return
        self.writer_q.put(RunTask(job.id, job.fid, job.payload, streams))


def remote_exception(msg: TaskFailed, where: str) -> BaseException:
    """The exception a TaskFailed frame carries, with the worker's traceback as its cause and where it was raised."""
    exc: BaseException
    try:
        exc = pickle.loads(msg.exception) if msg.exception is not None else RemoteError(msg.text)
    except Exception:  # noqa: BLE001 - not rebuildable here: it comes back as its text
        exc = RemoteError(msg.text)
    if isinstance(exc, ExceptionDescription):
        exc = rebuild(exc)
    exc.__cause__ = RemoteTraceback(format_chain(msg.chain))
    if hasattr(exc, "add_note"):
        exc.add_note(f"(raised in {where})")
    return exc


def _cancel(fut: Future[Any], why: str = "the pool closed before this task ended") -> None:
    """End the future with a CancelledError that says why (Future.cancel() would leave it without a message)."""
    with contextlib.suppress(InvalidStateError):  # the caller cancelled it, or it ended meanwhile
        if not fut.done():
            fut.set_exception(CancelledError(why))


class Provisioner(Protocol):
    """Dynamic MIG's side of the scheduler (dynamic.DynamicMig): it admits tasks, ranks and holds workers for
    them, learns run times, and is woken when work waits."""

    def admit(self, task: Task[Any]) -> None: ...

    def wake(self) -> None: ...

    def rank(self, job: Job, worker: WorkerProcess) -> int: ...

    def hold(self, job: Job, idle: WorkerProcess, held: dict[int, float]) -> bool: ...

    def finished(self, job: Job, worker: WorkerProcess, seconds: float) -> None: ...

    def progress(self, job: Job, worker: WorkerProcess, done: float | None, total: float | None, now: float) -> None:
        """A checkpoint task reported a checkpoint (on the worker's reader thread)."""
        ...

    def paused(self, job: Job, worker: WorkerProcess) -> None:
        """A checkpoint task stopped at a checkpoint, as the provisioner asked: it waits in the queue to resume."""
        ...


class Scheduler:
    """The pool's queue and routing: jobs go, in order, each to the least-loaded worker that serves it. It owns
    every thread of the pool's workers (`threads`) and the one thread that starts their processes."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        default_retries: int = 0,
        slot: Callable[[Scheduler, WorkerSpec], WorkerProcess] | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.codec: Codec = codec or SharedMemoryCodec()  # shared memory here, Ray's object store on Ray
        self._pack = self.codec.pack  # (looked up once: every submit calls it)
        self.shared = SharedState()  # the pool's collections (shared.py), served to its workers from here
        self.values: dict[int, Any] = {}  # stored values (put), packed, by their Ref's number
        self._forgotten: collections.deque[int] = collections.deque()  # refs that were dropped (from finalizers)
        self.pending: collections.deque[Job] = collections.deque()
        self.threads = Threads(on_error=self.thread_died)
        self.failure: PoolBrokenError | None = None  # set when one of the pool's threads died of an error
        self._slot = slot or WorkerProcess
        self.workers = [self._slot(self, s) for s in specs]
        self.default_retries = default_retries
        self.closed = False
        self.some_dead = False  # a slot gave up starting its worker (its dead_reason says why)
        self.starting = True
        self._ids = itertools.count()
        self._recent: collections.OrderedDict[int, tuple[object, int, bool]] = collections.OrderedDict()
        self.provisioner: Provisioner | None = None  # dynamic MIG: admits tasks, woken when work waits
        self._fid_by_bytes: dict[bytes, int] = {}
        self._fn_bytes: dict[int, bytes] = {}
        self.spawner = Spawner("migpool-spawn", self.threads)

    def launch(self, argv: list[str], **popen: Any) -> subprocess.Popen[bytes] | None:
        """Start a worker process, from the pool's spawning thread; None once the pool has shut down."""
        try:
            return self.spawner.call(lambda: subprocess.Popen(argv, **popen))
        except RuntimeError:  # the spawning thread was stopped: the pool is closed
            if self.closed:
                return None
            raise

    def restart(self, w: WorkerProcess) -> None:
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

    def _function(self, fn: Any) -> tuple[int, bool]:
        """The id under which workers know this function, and whether it is a generator function (its items
        stream back). Identical functions (same pickled bytes, e.g. the same lambda made anew for each call)
        share one id, so neither side grows with the number of submits; recently seen function objects skip
        re-pickling."""
        key = id(fn)
        got = self._recent.get(key)
        if got is not None and got[0] is fn:
            self._recent.move_to_end(key)
            return got[1], got[2]
        data = cloud_dumps(fn)
        fid = self._fid_by_bytes.setdefault(data, len(self._fid_by_bytes))
        self._fn_bytes[fid] = data
        streams = inspect.isgeneratorfunction(getattr(fn, "fn", fn))
        self._recent[key] = (fn, fid, streams)
        if len(self._recent) > RECENT_FUNCTIONS:
            self._recent.popitem(last=False)
        return fid, streams

    def submit(self, task: Task[Any], retries: int | None = None) -> Future[Any]:
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
            parts = sorted({w.spec.partition.profile for w in self.workers if w.spec.partition})
            if task.node is not None and not any(w.spec.node == task.node for w in self.workers):
                raise PluginError(f"this pool has no node {task.node}")
            if task.need_mib is not None:
                sizes = sorted(
                    {
                        f"{w.spec.partition.profile} ({w.spec.partition.memory_mib} MiB)"
                        for w in self.workers
                        if w.spec.partition
                    }
                )
                raise PluginError(
                    f"no partition of this pool has min_memory={task.min_memory}; partitions: "
                    + (", ".join(sizes) or "none (no mig plugin)")
                )
            raise PluginError(
                f"no worker runs on a {task.partition} partition; this pool's partitions: "
                + (", ".join(parts) if parts else "none (no mig plugin)")
            )
        fid, streams = self._function(task.fn)
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
        if w is None:
            _cancel(job.future, "the stream was closed before its task ran")
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
                alone = job.stream is not None  # a stream goes only to an idle worker
                for k, w in enumerate(workers):
                    if caps[k] > 0 and w.serves(task) and not (alone and w.outstanding):
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
                best.send(job, self._fn_bytes[job.fid])
                caps[at] = 0 if alone else caps[at] - 1  # (a stream runs alone)
                if caps[at] <= 0:
                    room -= 1
            if not room and i < len(pending) and provisioner is not None:
                provisioner.wake()

    def add_worker(self, spec: WorkerSpec) -> WorkerProcess:
        """Start one more worker (dynamic MIG); it takes jobs once ready."""
        w = self._slot(self, spec)
        with self.lock:
            if self.closed:
                raise RuntimeError("the pool is closed")
            self.workers.append(w)
        w.spawn()
        return w

    def retire(self, w: WorkerProcess, timeout: float = 10.0) -> None:
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
                w.stats.running = 1 if w.outstanding else 0
                w.stats.queued = max(0, len(w.outstanding) - 1)
                workers.append(w.stats.as_dict())
            return dict(pid=os.getpid(), time=time.time(), pending=len(self.pending), workers=workers)

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
            _cancel(j.future, "the pool closed before this task ran")
        if not kill:
            for w in self.workers:
                w.writer_q.put(Stop())
            deadline = time.monotonic() + timeout
            for w in self.workers:
                if w.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        w.proc.wait(max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.kill()
        for w in self.workers:
            if w.proc is not None:
                w.proc.wait()
        self.spawner.stop()
        with self.lock:
            jobs = [j for w in self.workers for j in w.outstanding]
            for w in self.workers:
                w.outstanding.clear()
            self.values.clear()
        for j in jobs:
            _cancel(j.future)
        for w in self.workers:
            w.writer_q.put(None)  # a writer whose reader never started (the pool closed as it spawned)
        stuck = self.threads.join(JOIN_S)
        self.codec.close()
        if stuck:
            log.warning("migpool: threads still running %.0f s after the pool closed: %s", JOIN_S, ", ".join(stuck))
