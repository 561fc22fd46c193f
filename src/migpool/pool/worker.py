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


def _error_frame(tid: int, e: BaseException) -> TaskFailed:
    try:
        payload: bytes | None = dumps(e)
    except Exception:  # noqa: BLE001 - an exception that cannot be pickled goes back as its text
        payload = None
    return TaskFailed(tid, payload, capture(e, skip_file=__file__), f"{type(e).__name__}: {e}")


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
    runner = Runner()
    write_frame(wfd, Ready(os.getpid(), sys.executable))
    while True:
        try:
            msg = read_frame(rfd)
        except EOFError:
            return
        if isinstance(msg, Stop):
            return
        frame = runner.handle(msg)
        if frame is not None:
            write_frame(wfd, frame)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
