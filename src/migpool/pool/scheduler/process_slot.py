"""The local kind of slot: a worker process on this machine, its pipes and its reader, writer and stderr threads;
restarted on the same partition when it dies."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...host.containment import Container
from ...host.leases import inherited_fds
from ..api.providers import WorkerSpec
from ..shared.delivery import Lent, Liveness
from ..shared.state import Caller, Waiter
from ..wire.messages import (
    Answer,
    Call,
    Cancel,
    Credit,
    Feed,
    Ready,
    Released,
    Stop,
    StoreValue,
    TaskDone,
    TaskFailed,
    ToWorker,
)
from ..wire.protocol import End, FrameError, channel, read_frame, write_frame
from ..worker.spares import hand_over
from .jobs import Job
from .slot import POLL_S, Slot

if TYPE_CHECKING:
    from .core import Scheduler

MAX_PREFETCH = 32
PREFETCH_BUDGET_S = 0.002  # keep about this much work queued in each worker's pipe


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


class ProcessSlot(Slot):
    """A slot whose worker is a process of this machine. Its threads (reader, writer, stderr) belong to its
    scheduler's `threads`; a restart runs on the scheduler's spawning thread, never on the reader thread that saw
    the worker die."""

    def __init__(self, sched: Scheduler, spec: WorkerSpec) -> None:
        super().__init__(sched, spec)
        self.proc: subprocess.Popen[bytes] | None = None
        self.container: Container | None = None  # what its process and everything it starts belong to
        self.outbox: Outbox | None = None  # set once its process runs
        self.unreadable: str | None = None  # why a frame from its process could not be read (it was ended)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def prefetch_depth(self) -> int:
        return max(2, min(MAX_PREFETCH, int(PREFETCH_BUDGET_S / self.avg_s)))

    # --- lifecycle ---
    def spawn(self) -> None:
        """Start this slot's worker: a warm spare handed this worker's environment (spares.py) where the pool
        keeps one that fits, else a fresh process."""
        spares = self.sched.spares
        spare = spares.take(self.spec) if spares is not None else None
        self.fresh()
        if spare is not None:
            env = dict(self.spec.env, MIGPOOL_PARENT_PID=str(os.getpid()), **spare.container.env())
            try:
                hand_over(spare.to_worker, env, inherited_fds(env))  # its partition's lease goes with it
            except OSError:  # it died as it was taken: a fresh process instead
                spare.end()
            else:
                return self._started(spare.proc, spare.container, spare.from_worker, spare.to_worker)
        p_r, c_w = channel()  # worker -> parent
        c_r, p_w = channel()  # parent -> worker
        container = Container.make(self.name.removeprefix("migpool-"))  # a cgroup of its own, or a subreaper
        env = dict(self.spec.env, MIGPOOL_PARENT_PID=str(os.getpid()), **container.env())
        proc = None
        try:
            proc = self.sched.launch(
                [self.spec.python, "-m", "migpool.pool.worker", c_r.spec(), c_w.spec()],
                env=env,
                pass_fds=(*c_r.fds(), *c_w.fds(), *inherited_fds(env)),  # its partition's lease too
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the parent only; the parent stops the workers
            )
        finally:
            c_r.close()
            c_w.close()
            if proc is None:  # it did not start (or the pool has shut down): its container goes
                container.end()
        if proc is None:
            p_r.close()
            p_w.close()
            return
        container.add(proc.pid, joins_itself=True)  # (until it has, kill() reaches it through its process group)
        self._started(proc, container, p_r, p_w)

    def _started(self, proc: subprocess.Popen[bytes], container: Container, p_r: End, p_w: End) -> None:
        """The worker process runs (started here, or a spare taken): its threads start."""
        with self.sched.lock:
            self.proc, self.container = proc, container
            closed = self.sched.closed
        if closed:  # the pool closed while this one started (a restart): it goes at once
            self.kill()
        wq = self.writer_q
        self.outbox = outbox = Outbox(p_w, proc.pid)
        threads = self.sched.threads
        threads.start(f"{self.name}-stderr", self._drain_stderr, proc)
        threads.start(f"{self.name}-writer", self._writer, outbox, wq)
        threads.start(f"{self.name}-reader", self._reader, proc, p_r, wq)

    def respawn(self) -> None:
        self.spawn()

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

    def _reader(self, proc: subprocess.Popen[bytes], fd: End, wq: queue.SimpleQueue[ToWorker | None]) -> None:
        """Answers from the worker, until it exits. Its exit is seen from the process itself (a pidfd, else a poll
        of its status), not from its pipe, which a process it forked may hold open. A frame that cannot be read
        (garbage a task wrote to the channel, memory that ran out while reading or taking it) ends this worker
        alone: its task fails with WorkerLostError and it is restarted; the pool goes on."""
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
                deadline, why = self.deadline()
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
                    self.overdue(why)
                    self.kill()
                    break
        except (EOFError, OSError):
            pass
        except (FrameError, MemoryError) as e:  # this worker's fault (or its task's): it alone goes
            self.unreadable = f"sent a frame that could not be read ({type(e).__name__}: {e})"
            self.kill()
        finally:
            wq.put(None)
            fd.close()
            if pidfd is not None:
                os.close(pidfd)
        self._on_exit(proc)

    def _on_exit(self, proc: subprocess.Popen[bytes]) -> None:
        sched = self.sched
        with sched.lock:  # from here no job is handed to this worker until its replacement is ready
            was_ready = self.ready.is_set() or self.done_one
            self.ready.clear()
        rc = proc.wait()
        container = self.container
        with contextlib.suppress(OSError):  # what its tasks left running (daemons, forks in flight) ends too
            if container is not None and container.cgroup is not None:
                container.end()
            elif container is not None:  # (a worker killed from outside swept nothing: what it left is found)
                container.sweep_orphans()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # (the sweep kind: the worker swept its descendants as it exited;
        sched.codec.peer_gone(proc.pid)  # what is left in its process group ends here)
        sched.shared.gone(proc.pid)  # its waiting calls go, the pool locks it held are released
        how, self.unreadable = self.unreadable or _exit_text(rc), None
        self.ended(was_ready, how, rc)

    def kill(self) -> None:
        """End its worker and everything the worker started: its container (the kernel's cgroup.kill, or a sweep
        of its descendants while it still lives), then its process group."""
        proc, container = self.proc, self.container
        if proc is None:
            return
        if container is not None and (container.cgroup is not None or proc.poll() is None):
            with contextlib.suppress(OSError):  # (the process group below still goes)
                container.end()  # (the sweep kind only while the worker is unreaped: its PID cannot be reused)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def stop(self, timeout: float) -> None:
        """Ask the worker to exit after its task, end it past `timeout`; either way, once this returns nothing it
        started runs any more (its container is ended: dynamic MIG frees its partition next)."""
        self.writer_q.put(Stop())
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            self.kill()
            self.proc.wait()

    def wait_exit(self, timeout: float | None) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)

    # --- while a task runs ---
    def call(self, msg: Call, peer: int) -> None:
        """A task's call on a pool collection: answered now, or (a wait) from the call that readies it."""
        outbox, cid, shared = self.outbox, msg.cid, self.sched.shared  # (this process's outbox: a later answer
        assert outbox is not None  # never reaches its successor; made before its reader started)

        def answer(ok: bool, value: Any) -> None:  # straight to the worker, which waits for it, reading
            with contextlib.suppress(OSError):  # it died meanwhile (a queue's item goes back: undo_of)
                outbox.send(Answer(cid, ok, value), shared.undo_of(msg.kind, msg.name, msg.op, value) if ok else None)

        shared.call(Waiter(Caller(peer, msg.thread), cid, answer, outbox.alive), msg.kind, msg.name, msg.op, msg.args)

    def feed(self, job: Job, sid: int, n: int) -> None:
        """Send up to `n` items of the job's input stream `sid` (read on the job's feeding thread)."""
        wq = self.writer_q  # (this process's: items read after it died go nowhere)

        def send(feeds: list[Feed]) -> None:
            for f in feeds:
                wq.put(f)

        self.sched.feed(job, sid, n, send, self.store)

    def store(self, vid: int) -> None:
        """Send stored value `vid` unless this worker holds it (before the input item that names it)."""
        with self.sched.lock:
            if vid not in self.sent_values:
                self.sent_values.add(vid)
                self.writer_q.put(StoreValue(vid, self.sched.values[vid]))

    def cancel(self, job: Job) -> None:
        self.writer_q.put(Cancel(job.id))

    def credit(self, job: Job, n: int) -> None:
        self.writer_q.put(Credit(job.id, n))
