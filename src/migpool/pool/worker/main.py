"""The worker process: `python -m migpool.pool.worker READ_END WRITE_END` (each `PIPE_FD:SOCKET_FD`, protocol.End).

Its environment (CUDA_VISIBLE_DEVICES among it) was fixed by the parent before it started. First thing, it joins
the container the parent made for it (host/containment.py: a cgroup, or it becomes the subreaper of what its tasks
start), so that every process a task starts, daemons included, ends with it. It runs one task at a time; it ends
its container when the parent dies (the kernel tells it), and sweeps what its tasks left when it exits.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import select
import signal
import sys
import threading
import time
from typing import Any

from ...host import containment
from ..api import refs
from ..api.checkpoints import Checkpoint
from ..shared import proxies as shared
from ..shared.proxies import refused
from ..wire.messages import (
    CHECKPOINTS,
    ONE_TASK_ENV,
    STREAM_OUT,
    THREADS_ENV,
    Answer,
    Call,
    Cancel,
    Checkpointed,
    Credit,
    DefineFunction,
    Feed,
    ForgetValue,
    Pause,
    Paused,
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
from ..wire.pickling import dumps
from ..wire.protocol import End, read_frame, write_frame
from ..wire.remote_errors import as_task_error, pickled
from ..wire.segments import Codec, SharedMemoryCodec
from ..wire.streams import WINDOW, InputStream, Link, give_inputs
from ..wire.tracebacks import capture

CALL_SPIN_S = 200e-6  # how long a call on a pool collection polls for its answer before it blocks


def _poll(fd: int, seconds: float) -> None:
    """Return as soon as `fd` is readable, or after `seconds`."""
    end = time.perf_counter() + seconds
    while not select.select([fd], [], [], 0)[0] and time.perf_counter() < end:
        pass


def _reap(seconds: float) -> None:
    """Reap the children that were just killed (for `seconds` at most), so that none outlives this worker as a
    zombie of an unreaped parent."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:  # (some are not dead yet)
                time.sleep(0.005)
        except ChildProcessError:  # none left
            return


def _guard_channel(fds: tuple[int, ...]) -> None:
    """A process that a task forks gets /dev/null where the channel was: only the worker itself reads tasks and
    writes answers (a forked child that returned from the task would hand its result to the next task)."""
    owner = os.getpid()

    def in_child() -> None:
        if os.getpid() == owner:
            return
        null = os.open(os.devnull, os.O_RDWR)
        for fd in fds:
            try:
                os.dup2(null, fd)
            except OSError:
                continue
        os.close(null)

    os.register_at_fork(after_in_child=in_child)


def _error_frame(tid: int, e: BaseException) -> TaskFailed:
    sent = as_task_error(e)
    try:
        payload: bytes | None = pickled(sent, dumps)
    except Exception:  # noqa: BLE001 - not even its description pickles: it goes back as its text
        payload = None
    return TaskFailed(tid, payload, capture(e, skip_file=__file__), f"{type(sent).__name__}: {sent}")


class Runner:
    """Runs the parent's messages: DefineFunction keeps a function, StoreValue a shared value, RunTask runs a task
    and returns its frame (a generator task's items go out through the link as it yields them). The channel loop
    below and the Ray actor (ray_pool.WorkerActor) each drive one, with their codec and link."""

    def __init__(self, codec: Codec, link: Link) -> None:
        self.functions: dict[int, Any] = {}
        self.codec = codec
        self.link = link

    def handle(self, msg: ToWorker) -> TaskDone | TaskFailed | Paused | None:
        kind = type(msg)
        if kind is RunTask:  # the usual message first
            return self.run(msg)  # type: ignore[arg-type]
        if kind is DefineFunction:
            self.functions[msg.fid] = msg.data  # type: ignore[union-attr]
        elif kind is StoreValue:
            refs.keep(msg.vid, self.codec.unpack(msg.data, shared=True))  # type: ignore[union-attr]
        elif kind is ForgetValue:
            refs.forget(msg.vid)  # type: ignore[union-attr]
        return None

    def run(self, msg: RunTask) -> TaskDone | TaskFailed | Paused:
        import pickle

        try:
            fn = self.functions[msg.fid]
            if type(fn) is bytes:
                fn = self.functions[msg.fid] = pickle.loads(fn)
            payload = msg.payload
            args, kwargs = pickle.loads(payload) if type(payload) is bytes else self.codec.unpack(payload)
            if msg.streams:
                args, kwargs = give_inputs(args, kwargs, lambda sid: InputStream(self.link, msg.tid, sid, self._unpack))
            if msg.streams & CHECKPOINTS:
                if msg.resume is not None:
                    kwargs = {**kwargs, "resume": pickle.loads(msg.resume)}
                return self._checkpoints(msg.tid, fn(*args, **kwargs))
            result = fn(*args, **kwargs)
            if msg.streams & STREAM_OUT:
                self._stream(msg.tid, result)
                return TaskDone(msg.tid, None)
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            return _error_frame(msg.tid, e)
        try:
            return TaskDone(msg.tid, self.codec.pack(result))
        except Exception as e:  # noqa: BLE001
            return _error_frame(msg.tid, TypeError(f"the task's result could not be pickled: {e}"))

    def _unpack(self, data: Any) -> Any:
        return self.codec.unpack(data)

    def _checkpoints(self, tid: int, gen: Any) -> TaskDone | TaskFailed | Paused:
        """Run a checkpoint task: report each checkpoint; stop at one when the pool asks (Paused, with its state);
        its return value is its result."""
        try:
            while True:
                try:
                    item = next(gen)
                except StopIteration as end:
                    result = end.value
                    break
                point = item if isinstance(item, Checkpoint) else Checkpoint(item)
                if self.link.checkpointed(tid, point.done, point.total):
                    gen.close()
                    try:
                        return Paused(tid, dumps(point.state))
                    except Exception as e:  # noqa: BLE001
                        return _error_frame(tid, TypeError(f"the task's checkpoint could not be pickled: {e}"))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            return _error_frame(tid, e)
        try:
            return TaskDone(tid, self.codec.pack(result))
        except Exception as e:  # noqa: BLE001
            return _error_frame(tid, TypeError(f"the task's result could not be pickled: {e}"))

    def _stream(self, tid: int, items: Any) -> None:
        """Send what the generator yields, until it ends or the consumer stops (then it is closed)."""
        it = iter(items)
        try:
            for item in it:
                try:
                    packed = self.codec.pack(item)
                except Exception as e:
                    raise TypeError(f"an item of the task's stream could not be pickled: {e}") from e
                if not self.link.emit(tid, packed):
                    break
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()


class ChannelLink:
    """The worker's channel while it runs: control messages (a stream's credit, cancel and input items, answers to
    the tasks' calls on pool collections) are taken as they come; any other message (the next task, a definition,
    Stop) waits in `backlog` for the main loop.

    Any thread of a task may need the channel (a collection's call from a thread the task started), so one
    thread reads at a time, the others wait on `cond` for what it takes; frames go out one whole at a time."""

    def __init__(self, rsock: End, wsock: End, codec: Codec) -> None:
        self.r, self.w = rsock, wsock
        self.codec = codec
        self.releases: collections.deque[tuple[int, bool]] = collections.deque()  # the parent's, unmapped here
        self.backlog: collections.deque[Any] = collections.deque()
        self.credit: dict[int, int] = {}
        self.cancelled: set[int] = set()
        self.pauses: set[int] = set()  # tasks asked to stop at their next checkpoint (kept: one may come early)
        self.feeds: dict[tuple[int, int], collections.deque[tuple[Any, int]]] = {}
        self.running: set[int] = set()  # the tasks with streams that run now
        self.answers: dict[int, Answer] = {}
        self.cond = threading.Condition(threading.Lock())
        self.reading = False  # a thread is reading the channel (with `cond` released)
        self._wlock = threading.Lock()
        self._cids = itertools.count()

    def next_message(self) -> Any:
        """The next message for the main loop (raises EOFError when the parent is gone)."""
        with self.cond:
            while not self.backlog:
                self._take(None)
            return self.backlog.popleft()

    def _take(self, timeout: float | None, spin: float = 0.0) -> bool:
        """With `cond` held: read one message (waiting up to `timeout`; None: until one comes) and take it, or,
        while another thread reads, wait for that one to take its message. True if a message was read here.
        `spin`: first poll the channel for up to that many seconds (an answer that comes within it is taken without
        the wake-up of a blocked read, which costs this machine more than the whole round trip otherwise)."""
        if self.reading:
            self.cond.wait(timeout)
            return False
        self.reading = True
        self.cond.release()
        msg = None
        try:
            if spin:
                _poll(self.r.fd, spin)
            if timeout is None or select.select([self.r], [], [], timeout)[0]:
                msg = read_frame(self.r, self.release)
        finally:
            self.cond.acquire()
            self.reading = False
            self.cond.notify_all()
        if msg is None:
            return False
        if type(msg) is RunTask or not self._control(msg):
            self.backlog.append(msg)
        return True

    def release(self, sid: int, reusable: bool) -> None:
        """A segment of the parent's was unmapped here (from a finalizer: queued, sent with the next frame)."""
        self.releases.append((sid, reusable))

    def send(self, frame: Any) -> None:
        """Write a frame, after telling the parent which of its segments this worker let go of."""
        with self._wlock:
            if self.releases:
                items = []
                while self.releases:
                    items.append(self.releases.popleft())
                write_frame(self.w, Released(items))
            write_frame(self.w, frame)

    def begin(self, tid: int) -> None:
        """Task `tid`, which has streams, starts: its stream messages are taken from now on."""
        with self.cond:
            self.running.add(tid)
            self.credit[tid] = WINDOW

    def finish(self, tid: int) -> None:
        """Task `tid` (begun) ended: what came for its streams goes."""
        with self.cond:
            self.running.discard(tid)
            self.credit.pop(tid, None)
            self.cancelled.discard(tid)
            for key in [k for k in self.feeds if k[0] == tid]:
                del self.feeds[key]

    def _control(self, msg: Any) -> bool:
        """Take a message about the running task (its streams, its calls, the stored values its items name); False
        for any other message."""
        kind = type(msg)
        if kind is Answer:
            self.answers[msg.cid] = msg
        elif kind is Credit:
            if msg.tid in self.running:
                self.credit[msg.tid] = self.credit.get(msg.tid, 0) + msg.n
        elif kind is Cancel:
            if msg.tid in self.running:
                self.cancelled.add(msg.tid)
        elif kind is Pause:
            self.pauses.add(msg.tid)
        elif kind is Feed:
            if msg.tid in self.running:
                self.feeds.setdefault((msg.tid, msg.sid), collections.deque()).append((msg.data, msg.state))
        elif kind is Released:
            self.codec.released(msg.items, 0)
        elif kind is StoreValue:  # (taken at once: a running task's input item may name it)
            refs.keep(msg.vid, self.codec.unpack(msg.data, shared=True))
        else:
            return False
        return True

    def emit(self, tid: int, item: Any) -> bool:
        with self.cond:
            while self._take(0):  # what has come meanwhile (a cancel above all)
                pass
            while tid not in self.cancelled and self.credit.get(tid, 0) <= 0:
                self._take(None)
            if tid in self.cancelled:
                return False
            self.credit[tid] -= 1
        self.send(Yielded(tid, item))
        return True

    def want(self, tid: int, sid: int, n: int) -> None:
        self.send(Want(tid, sid, n))

    def checkpointed(self, tid: int, done: float | None, total: float | None) -> bool:
        self.send(Checkpointed(tid, done, total))
        with self.cond:
            while self._take(0):  # a Pause that came meanwhile
                pass
            if tid in self.pauses:
                self.pauses.discard(tid)
                return True
        return False

    def next_feed(self, tid: int, sid: int) -> tuple[Any, int]:
        with self.cond:
            q = self.feeds.setdefault((tid, sid), collections.deque())
            while not q:
                self._take(None)
            return q.popleft()

    def call(self, kind: str, name: str, op: str, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        """A call on a pool collection, answered by the parent (shared.Transport)."""
        cid = next(self._cids)
        thread = threading.get_ident()
        self.send(Call(cid, kind, name, op, args, thread))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while cid not in self.answers:
                if deadline is None:
                    self._take(None, CALL_SPIN_S)
                    continue
                left = deadline - time.monotonic()
                if left > 0:
                    self._take(left)
                    continue
                deadline = None  # no longer wanted; the parent answers with the value or TIMED_OUT
                self.send(Withdraw(cid, thread))
            answer = self.answers.pop(cid)
        if not answer.ok:
            raise refused(answer.value)
        return answer.value


def main(read_end: str, write_end: str) -> None:
    # first of all: join the container the parent made for this worker (a cgroup, or become the subreaper of
    # what its tasks start), and have the kernel end it all should the parent die
    container = containment.enter()
    containment.arm_parent_death(container, int(os.environ.get("MIGPOOL_PARENT_PID", os.getppid())))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    r, w = End.from_spec(read_end), End.from_spec(write_end)
    _guard_channel((*r.fds(), *w.fds()))
    owner = os.getpid()
    codec = SharedMemoryCodec()
    link = ChannelLink(r, w, codec)
    runner = Runner(codec, link)
    shared.install(link)
    around = contextlib.ExitStack()
    if os.environ.get("MIGPOOL_INIT") or os.environ.get("MIGPOOL_AROUND"):  # plugins' set-up for this process
        from . import lifecycle
        from .distributed import run_initializers

        try:
            run_initializers()  # (torch.distributed: this worker's rank)
            around = lifecycle.enter()  # (Plugin.create(...).with_around_process)
        except Exception as e:  # noqa: BLE001 - the reason, in one line, is what the pool shows
            sys.stderr.write(f"migpool: this worker could not be set up: {type(e).__name__}: {e}\n")
            sys.exit(1)
    with around:
        _serve(link, runner, owner)


def _serve(link: ChannelLink, runner: Runner, owner: int) -> None:
    """The worker's loop. The main thread reads the channel and takes the messages in order (a function's
    definition comes before the tasks that call it); each task runs on it, or with the thread executor
    (`Executor(concurrency=n)`) in one of n threads. Stop lets the tasks sent before it end; the threads are joined
    before the process sweeps what the tasks left running."""
    from concurrent.futures import ThreadPoolExecutor

    one_task = os.environ.get(ONE_TASK_ENV) == "1"  # Worker(reuse_processes=False): a fresh process per task
    threads = int(os.environ.get(THREADS_ENV, "1"))
    tasks = ThreadPoolExecutor(threads, thread_name_prefix="migpool-task") if threads > 1 else None

    def run(msg: RunTask) -> None:
        frame = runner.run(msg)
        if os.getpid() != owner:  # a forked copy that returned from the task: it ends here, silently
            os._exit(0)
        if msg.streams:
            link.finish(msg.tid)
        with contextlib.suppress(OSError):  # (the parent is gone: the channel's reader sees it too)
            link.send(frame)

    link.send(Ready(os.getpid(), sys.executable))
    try:
        while True:
            try:
                msg = link.next_message()
            except EOFError:
                return
            if isinstance(msg, Stop):
                return
            if type(msg) is not RunTask:
                runner.handle(msg)
            else:
                if msg.streams:
                    link.begin(msg.tid)
                if tasks is not None:
                    tasks.submit(run, msg)
                else:
                    run(msg)
                    if one_task:
                        return
            msg = None  # what it holds (a mapping, a segment) goes now, not with the next message
    finally:
        if tasks is not None:
            tasks.shutdown(wait=True)
        if os.getpid() == owner:  # what the tasks left running ends before this worker does (the parent then
            containment.sweep_descendants(owner)  # ends the container, which holds whatever escaped the sweep)
            _reap(1.0)
