"""The worker process: `python -m migpool.pool.worker READ_END WRITE_END` (each `PIPE_FD:SOCKET_FD`, protocol.End).

Its environment (CUDA_VISIBLE_DEVICES among it) was fixed by the parent before it started. It runs one
task at a time and exits when the parent goes away.
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

from . import refs
from .messages import (
    STREAM_OUT,
    Cancel,
    Credit,
    DefineFunction,
    Feed,
    ForgetValue,
    Ready,
    Released,
    RunTask,
    Stop,
    StoreValue,
    TaskDone,
    TaskFailed,
    ToWorker,
    Want,
    Yielded,
)
from .pickling import dumps
from .protocol import End, read_frame, write_frame
from .remote_errors import as_task_error, pickled
from .segments import Codec, SharedMemoryCodec
from .streams import WINDOW, InputStream, Link, give_inputs
from .tracebacks import capture


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent dies
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    # the process exits from this thread: nothing joins it
    threading.Thread(target=watch, name="migpool-parent-watch", daemon=True).start()


def _subreaper() -> None:
    """Become the reaper of this worker's orphaned descendants (Linux), so that a process a task forked and left
    behind, even one that started its own session, stays below this worker and ends with it (_end_descendants)."""
    try:
        ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _end_descendants() -> None:
    """SIGKILL every process below this one (the tasks' leftovers), children before their own children."""
    seen: set[int] = set()
    todo = _children(os.getpid())
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += _children(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + 1.0  # reap them: their children were reparented to us, the subreaper
    while seen and time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.005)
        except ChildProcessError:
            break


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

    def handle(self, msg: ToWorker) -> TaskDone | TaskFailed | None:
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

    def run(self, msg: RunTask) -> TaskDone | TaskFailed:
        import pickle

        try:
            fn = self.functions[msg.fid]
            if type(fn) is bytes:
                fn = self.functions[msg.fid] = pickle.loads(fn)
            payload = msg.payload
            args, kwargs = pickle.loads(payload) if type(payload) is bytes else self.codec.unpack(payload)
            if msg.streams:
                args, kwargs = give_inputs(args, kwargs, lambda sid: InputStream(self.link, msg.tid, sid, self._unpack))
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
    """The worker's channel while a task runs: control messages for the running task (credit, cancel, input
    items) are taken as they come; any other message (the next task, a definition, Stop) waits in `backlog`."""

    def __init__(self, rsock: End, wsock: End, codec: Codec) -> None:
        self.r, self.w = rsock, wsock
        self.codec = codec
        self.releases: collections.deque[tuple[int, bool]] = collections.deque()  # the parent's, unmapped here
        self.backlog: collections.deque[Any] = collections.deque()
        self.credit: dict[int, int] = {}
        self.cancelled: set[int] = set()
        self.feeds: dict[tuple[int, int], collections.deque[tuple[Any, int]]] = {}
        self.running: int | None = None

    def next_message(self) -> Any:
        """The next message for the main loop (raises EOFError when the parent is gone)."""
        while True:
            msg = self.backlog.popleft() if self.backlog else read_frame(self.r, self.release)
            if type(msg) is RunTask or not self._control(msg):
                return msg

    def release(self, sid: int, reusable: bool) -> None:
        """A segment of the parent's was unmapped here (from a finalizer: queued, sent with the next frame)."""
        self.releases.append((sid, reusable))

    def send(self, frame: Any) -> None:
        """Write a frame, after telling the parent which of its segments this worker let go of."""
        if self.releases:
            items = []
            while self.releases:
                items.append(self.releases.popleft())
            write_frame(self.w, Released(items))
        write_frame(self.w, frame)

    def begin(self, tid: int) -> None:
        self.running = tid
        self.credit = {tid: WINDOW}
        self.cancelled.clear()
        self.feeds.clear()

    def _control(self, msg: Any) -> bool:
        """Take a message about the running task's streams; False for any other message."""
        kind = type(msg)
        if kind is Credit:
            if msg.tid == self.running:
                self.credit[msg.tid] = self.credit.get(msg.tid, 0) + msg.n
        elif kind is Cancel:
            if msg.tid == self.running:
                self.cancelled.add(msg.tid)
        elif kind is Feed:
            if msg.tid == self.running:
                self.feeds.setdefault((msg.tid, msg.sid), collections.deque()).append((msg.data, msg.state))
        elif kind is Released:
            self.codec.released(msg.items, 0)
        else:
            return False
        return True

    def _receive(self, block: bool) -> None:
        import select

        while block or select.select([self.r], [], [], 0)[0]:
            msg = read_frame(self.r, self.release)
            if not self._control(msg):
                self.backlog.append(msg)
            block = False

    def emit(self, tid: int, item: Any) -> bool:
        self._receive(block=False)
        while tid not in self.cancelled and self.credit.get(tid, 0) <= 0:
            self._receive(block=True)
        if tid in self.cancelled:
            return False
        self.credit[tid] -= 1
        self.send(Yielded(tid, item))
        return True

    def want(self, tid: int, sid: int, n: int) -> None:
        self.send(Want(tid, sid, n))

    def next_feed(self, tid: int, sid: int) -> tuple[Any, int]:
        q = self.feeds.setdefault((tid, sid), collections.deque())
        while not q:
            self._receive(block=True)
        return q.popleft()


def main(read_end: str, write_end: str) -> None:
    _die_with_parent(int(os.environ.get("MIGPOOL_PARENT_PID", os.getppid())))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    _subreaper()
    r, w = End.from_spec(read_end), End.from_spec(write_end)
    _guard_channel((*r.fds(), *w.fds()))
    owner = os.getpid()
    codec = SharedMemoryCodec()
    link = ChannelLink(r, w, codec)
    runner = Runner(codec, link)
    link.send(Ready(os.getpid(), sys.executable))
    try:
        while True:
            try:
                msg = link.next_message()
            except EOFError:
                return
            if isinstance(msg, Stop):
                return
            if type(msg) is RunTask and msg.streams:
                link.begin(msg.tid)
            frame = runner.handle(msg)
            if os.getpid() != owner:  # a forked copy that returned from the task: it ends here, silently
                os._exit(0)
            if frame is not None:
                link.running = None
                link.send(frame)
            msg = frame = None  # what they hold (a mapping, a segment) goes now, not with the next message
    finally:
        if os.getpid() == owner:
            _end_descendants()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
