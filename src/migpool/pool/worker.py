"""The worker process: `python -m migpool.pool.worker READ_FD WRITE_FD`.

Its environment (CUDA_VISIBLE_DEVICES among it) was fixed by the parent before it started. It runs one
task at a time and exits when the parent goes away.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

from .messages import DefineFunction, Ready, RunTask, Stop, TaskDone, TaskFailed, ToWorker
from .protocol import dumps, read_frame, write_frame
from .remote_errors import as_task_error, pickled
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


def _guard_channel(rfd: int, wfd: int) -> None:
    """A process that a task forks gets /dev/null where the channel was: only the worker itself reads tasks and
    writes answers (a forked child that returned from the task would hand its result to the next task)."""
    owner = os.getpid()

    def in_child() -> None:
        if os.getpid() == owner:
            return
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (rfd, wfd):
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
    """Runs the parent's messages: DefineFunction keeps a function, RunTask runs one and returns its frame. The
    pipe loop below and the Ray actor (ray_pool.WorkerActor) both drive one."""

    def __init__(self) -> None:
        self.functions: dict[int, Any] = {}

    def handle(self, msg: ToWorker) -> TaskDone | TaskFailed | None:
        import pickle

        if not isinstance(msg, RunTask):  # the usual message first
            if isinstance(msg, DefineFunction):
                self.functions[msg.fid] = msg.data
            return None
        try:
            fn = self.functions[msg.fid]
            if isinstance(fn, bytes):
                fn = self.functions[msg.fid] = pickle.loads(fn)
            args, kwargs = pickle.loads(msg.payload)
            result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            return _error_frame(msg.tid, e)
        try:
            return TaskDone(msg.tid, dumps(result))
        except Exception as e:  # noqa: BLE001
            return _error_frame(msg.tid, TypeError(f"the task's result could not be pickled: {e}"))


def main(rfd: int, wfd: int) -> None:
    _die_with_parent(int(os.environ.get("MIGPOOL_PARENT_PID", os.getppid())))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    _subreaper()
    _guard_channel(rfd, wfd)
    owner = os.getpid()
    runner = Runner()
    write_frame(wfd, Ready(os.getpid(), sys.executable))
    try:
        while True:
            try:
                msg = read_frame(rfd)
            except EOFError:
                return
            if isinstance(msg, Stop):
                return
            frame = runner.handle(msg)
            if os.getpid() != owner:  # a forked copy that returned from the task: it ends here, silently
                os._exit(0)
            if frame is not None:
                write_frame(wfd, frame)
    finally:
        if os.getpid() == owner:
            _end_descendants()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
