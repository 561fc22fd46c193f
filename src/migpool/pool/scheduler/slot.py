"""A scheduler's slot: one worker of the pool (a local process, or a Ray actor) as the scheduler sees it.

`Slot` holds what every kind of worker shares: the jobs sent to it in order, its readiness, its draining, its stats,
the one capacity gate that decides how many more jobs it takes, and what happens when an answer comes back or the
worker is gone. A kind of slot adds how its worker starts, how messages reach it and how it is stopped.
"""

from __future__ import annotations

import abc
import collections
import itertools
import pickle
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from ...errors import RemoteError, TaskTimeoutError, WorkerLostError, task_failed
from ...observe.poolstats import WorkerStats
from ...observe.workload import record_task
from ..api.providers import WorkerSpec
from ..api.task import Task
from ..shared.state import Caller
from ..wire.messages import (
    CHECKPOINTS,
    ONE_TASK_ENV,
    STREAM_IN,
    STREAM_OUT,
    Call,
    Checkpointed,
    DefineFunction,
    FromWorker,
    Pause,
    Paused,
    Released,
    RunTask,
    StoreValue,
    TaskDone,
    TaskFailed,
    ToWorker,
    Want,
    Withdraw,
    Yielded,
)
from ..wire.remote_errors import ExceptionDescription, rebuild
from ..wire.tracebacks import RemoteTraceback, format_chain
from .jobs import Job, cancel_future, serves

if TYPE_CHECKING:
    from .core import Scheduler

POLL_S = 0.1  # how often a waiting reader looks at the deadline of the task its worker runs
CLEANUP_S = 5.0  # how long a generator may take to end once its consumer stopped; then its worker is replaced


class Slot(abc.ABC):
    """One worker of the pool, restarted on the same partition when it dies. Its jobs, flags and stats are read
    and changed with its scheduler's lock held."""

    def __init__(self, sched: Scheduler, spec: WorkerSpec) -> None:
        self.sched = sched
        self.spec = spec
        self.outstanding: collections.deque[Job] = collections.deque()
        self.ready = threading.Event()
        self.dead_reason: str | None = None  # set when it failed to start and gave up
        self.sent_fns: set[int] = set()
        self.sent_values: set[int] = set()  # the stored values (refs) this worker holds
        self.writer_q: queue.SimpleQueue[ToWorker | None] = queue.SimpleQueue()  # messages on their way to it
        self.one_task = spec.env.get(ONE_TASK_ENV) == "1"  # Worker(reuse_processes=False): a process per task
        self.done_one = False  # its process ran its one task (and is ending)
        self.avg_s = 0.01
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.startup_failures = 0
        self.timed_out = False
        self.stalled = False  # ended because a stopped stream's generator did not end in time
        self.restarts = 0
        self.draining = False  # takes no new job (dynamic MIG is about to free its partition)
        self.retired = False  # removed from the pool: not restarted when its worker ends
        self.threads = spec.threads  # jobs its worker runs at once (the first of `outstanding`)
        self.due = -1  # the id of the running job whose deadline `deadline` found first (no Job is kept: its
        # result would stay alive with it)
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

    # --- what each kind of worker does its own way ---
    @property
    @abc.abstractmethod
    def pid(self) -> int:
        """Its worker's process id (0 while there is none)."""

    @abc.abstractmethod
    def spawn(self) -> None:
        """Start its worker; it takes jobs once it is ready."""

    @abc.abstractmethod
    def respawn(self) -> None:
        """Start its worker again after it died (on the scheduler's spawning thread)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """End its worker now."""

    @abc.abstractmethod
    def stop(self, timeout: float) -> None:
        """Ask its worker to exit once its task is done; wait up to `timeout` for it, then end it."""

    @abc.abstractmethod
    def wait_exit(self, timeout: float | None) -> None:
        """Wait up to `timeout` (None: as long as it takes) for its worker to end, once asked to."""

    @abc.abstractmethod
    def feed(self, job: Job, sid: int, n: int) -> None:
        """Send up to `n` items of the job's input stream `sid`."""

    @abc.abstractmethod
    def cancel(self, job: Job) -> None:
        """Stop the job's stream on its worker (its consumer stopped early)."""

    @abc.abstractmethod
    def credit(self, job: Job, n: int) -> None:
        """The job's stream consumer has room for `n` more items."""

    @abc.abstractmethod
    def call(self, msg: Call, peer: int) -> None:
        """A task's call on a pool collection, which this slot answers."""

    @abc.abstractmethod
    def prefetch_depth(self) -> int:
        """How many jobs to keep at its worker when nothing else limits it: enough to cover the time a job takes
        to reach it."""

    # --- the capacity gate (scheduler lock held) ---
    def capacity(self) -> int:
        """How many more jobs it takes now: none unless it is ready, alive and not draining; none behind a stream
        (a stream runs alone); one at a time under dynamic MIG (a task that waits may get a partition of its own
        rather than queue here) and for a process per task; else its prefetch depth, at least Worker(buffer)
        beyond those it runs (its threads). A worker with threads runs a stream in one of them, beside other jobs."""
        if not self.ready.is_set() or self.dead_reason or self.draining:
            return 0
        if self.threads == 1 and self.outstanding and self.outstanding[0].stream is not None:
            return 0
        if self.sched.provisioner is not None or self.one_task:
            depth = 1
        else:
            depth = max(self.spec.buffer, self.prefetch_depth() - 1) + self.threads
        return depth - len(self.outstanding)

    def serves(self, task: Task[Any]) -> bool:
        if task.node is None and task.partition is None and task.need_mib is None:
            return True  # (the usual task: any worker serves it)
        p = self.spec.partition
        return serves(task, self.spec.node, p.profile if p else None, p.memory_mib if p else None)

    # --- sending ---
    def fresh(self) -> None:
        """Forget what the previous worker of this slot knew: a new one is starting."""
        self.ready.clear()
        self.sent_fns = set()
        self.sent_values = set()
        self.timed_out = False
        self.stalled = False
        self.done_one = False
        self.due = -1
        self.writer_q = queue.SimpleQueue()

    def send(self, job: Job, fn_bytes: bytes) -> None:
        """Hand `job` to its worker, with its function and stored values where the worker lacks them (lock held)."""
        job.attempts += 1
        self.stats.tasks_started += 1
        if len(self.outstanding) < self.threads:
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

    def pause(self, job: Job) -> None:
        """Ask the worker to stop `job` (a checkpoint task it runs) at its next checkpoint (lock held)."""
        job.pausing = True
        self.writer_q.put(Pause(job.id))

    def head_deadline(self) -> float | None:
        """When the first of the tasks running now must end (its timeout), or None."""
        with self.sched.lock:
            ends = [j.started + j.task.timeout for j in self.running() if j.task.timeout]
            return min(ends) if ends else None

    def running(self) -> list[Job]:
        """The jobs its worker runs now: the first of those sent, as many as it has threads (lock held)."""
        if self.threads == 1:
            return [self.outstanding[0]] if self.outstanding else []
        return list(itertools.islice(self.outstanding, self.threads))

    def deadline(self) -> tuple[float | None, str]:
        """When its worker must be ended unless a task running now ended: its timeout ("timeout"), or, for a
        stream its consumer stopped, the bound on its generator's cleanup ("cleanup"); (None, "") if neither. The
        running job it names is noted as `due` (a worker with threads: with one, it is the first)."""
        with self.sched.lock:
            if not self.outstanding:
                return None, ""
            if self.threads == 1:
                return _deadline_of(self.outstanding[0])
            best: tuple[float | None, str] = (None, "")
            for job in self.running():
                when, why = _deadline_of(job)
                if when is not None and (best[0] is None or when < best[0]):
                    best, self.due = (when, why), job.id
            return best

    def bound_cleanup(self, job: Job) -> None:
        """Its consumer stopped `job`'s stream: its generator's cleanup (a `finally`, user code) gets CLEANUP_S,
        after which its worker is ended and replaced (scheduler lock held)."""
        if job.cleanup_by is None:
            job.cleanup_by = time.monotonic() + CLEANUP_S

    def overdue(self, why: str) -> None:
        """The task at hand passed its deadline (`why`, from `deadline`): its worker is about to be ended."""
        if why == "cleanup":
            self.stalled = True
        else:
            self.timed_out = True

    # --- answers ---
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
            job = self._take(msg.tid, now)
            self.avg_s = 0.8 * self.avg_s + 0.2 * max(now - job.started, 1e-7)
            self.stats.finished(now - job.started, None if isinstance(msg, TaskDone) else msg.text)
        provisioner = self.sched.provisioner
        if isinstance(msg, TaskDone):
            if provisioner is not None:
                provisioner.finished(job, self, now - job.started)
            record_task(job.task.fn, job.task.need_mib, job.submitted, self.spec.partition, now - job.started)
            self.deliver(job, msg.result)
            return
        job.future.set_exception(remote_exception(msg, self.spec.describe()))

    def paused(self, msg: Paused) -> None:
        """The task stopped at a checkpoint, as asked: it waits at the front of the queue, to resume from it on
        the partition dynamic MIG makes for it (or, should that fail, on any that serves it)."""
        now = time.monotonic()
        with self.sched.lock:
            job = self._take(msg.tid, now)
            self.stats.finished(now - job.started, None)
            job.resume, job.pausing = msg.state, False
            job.moves += 1
            job.attempts -= 1  # a move is no attempt: its retries stay for failures
            self.sched.pending.appendleft(job)
        provisioner = self.sched.provisioner
        if provisioner is not None:
            provisioner.paused(job, self)
        self.sched.pump()

    def _take(self, tid: int, now: float) -> Job:
        """Job `tid`, which its worker ended, out of `outstanding`; the job that its thread takes up next starts
        now (lock held)."""
        out = self.outstanding
        if self.threads == 1 or out[0].id == tid:
            job = out.popleft()
        else:
            job = next(j for j in out if j.id == tid)
            out.remove(job)
        if len(out) >= self.threads:
            out[self.threads - 1].started = now
        return job

    def _job(self, tid: int) -> Job | None:
        """Job `tid`, if its worker still has it (lock held)."""
        if self.threads == 1:
            return self.outstanding[0] if self.outstanding and self.outstanding[0].id == tid else None
        return next((j for j in self.outstanding if j.id == tid), None)

    def _between(self, msg: FromWorker, peer: int) -> None:
        """What a worker sends while a task runs: a call on a pool collection, a stream's item or request, segments
        it unmapped."""
        if isinstance(msg, Call):
            self.call(msg, peer)
            return
        if isinstance(msg, Withdraw):  # (answered with TIMED_OUT, unless its answer went already)
            self.sched.shared.withdraw(Caller(peer, msg.thread), msg.cid)
            return
        if isinstance(msg, Released):
            self.sched.codec.released(msg.items, peer)
            return
        if isinstance(msg, Checkpointed):
            self._progress(msg)
            return
        if not isinstance(msg, (Yielded, Want)):
            return
        with self.sched.lock:
            job = self._job(msg.tid)
        if job is None:
            return
        if isinstance(msg, Want):
            self.feed(job, msg.sid, msg.n)
        elif job.stream is not None:
            job.stream.push(msg.item)

    def _progress(self, msg: Checkpointed) -> None:
        now = time.monotonic()
        with self.sched.lock:
            job = self._job(msg.tid)
            if job is None:
                return
            job.progress = (msg.done, msg.total, now)
        provisioner = self.sched.provisioner
        if provisioner is not None:
            provisioner.progress(job, self, msg.done, msg.total, now)

    def deliver(self, job: Job, result: Any) -> None:
        """End a job's future with its packed result (a stream's end: None)."""
        if job.stream is not None:
            job.future.set_result(None)
            return
        try:
            job.future.set_result(pickle.loads(result) if type(result) is bytes else self.sched.codec.unpack(result))
        except Exception as e:  # noqa: BLE001
            job.future.set_exception(RemoteError(f"the task's result could not be unpickled here: {e!r}"))

    # --- the end of a worker ---
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
                    cancel_future(j.future)
                return
            running, rest = jobs[: self.threads], jobs[self.threads :]
            for j in reversed(rest):  # never started: back to the front of the queue, in order
                sched.pending.appendleft(j)
            failures: list[tuple[Job, BaseException]] = []
            retried: list[Job] = []
            for job in running:
                failure = self._fate(job, how, rc, due=self.threads == 1 or job.id == self.due)
                if failure is None:
                    retried.append(job)
                else:
                    failures.append((job, failure))
            for j in reversed(retried):
                sched.pending.appendleft(j)
            if not was_ready:
                self.startup_failures += 1
            give_up = self.startup_failures >= 3 or sched.starting
            if give_up:
                sched.some_dead = True
                self.dead_reason = f"{self.spec.describe()} could not start: it {how}" + (
                    ". Its last output:\n  " + "\n  ".join(self.stderr_tail) if self.stderr_tail else ""
                )
                self.ready.set()
        for job, failure in failures:
            job.future.set_exception(failure)
        if give_up:
            sched.fail_unservable()
            return
        if not self.done_one:  # (a process per task ends by design: that is no restart)
            self.restarts += 1
        sched.restart(self)

    def _fate(self, job: Job, how: str, rc: int | None, due: bool) -> BaseException | None:
        """What a job that ran when its worker ended gets: its failure, or None to run again (lock held). `due`:
        the job whose deadline ended the worker, if one did (under the thread executor the others running then
        were ended with it, and are retried or lost)."""
        self.stats.finished(
            time.monotonic() - job.started,
            f"timed out after {job.task.timeout}s" if self.timed_out and due else f"worker {how}",
            lost=True,
        )
        if self.stalled and due:
            return TaskTimeoutError(
                f"{job.task!r}: its generator did not end within {CLEANUP_S}s after its consumer stopped; "
                f"the worker on {self.spec.describe()} was ended and restarted"
            )
        if self.timed_out and due:
            return TaskTimeoutError(
                f"{job.task!r} ran past its timeout of {job.task.timeout}s on "
                f"{self.spec.describe()}; the worker was stopped and restarted"
            )
        if job.attempts <= job.retries and not (job.stream is not None and job.stream.started):
            return None
        return self._lost(job, how, rc)

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


def _deadline_of(job: Job) -> tuple[float | None, str]:
    timeout = job.started + job.task.timeout if job.task.timeout else None
    cleanup = job.cleanup_by
    if cleanup is not None and (timeout is None or cleanup < timeout):
        return cleanup, "cleanup"
    return timeout, "timeout" if timeout is not None else ""


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
    return task_failed(exc)
