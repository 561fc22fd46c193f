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

    threading.Thread(target=watch, daemon=True).start()


def _error_frame(tid: int, e: BaseException) -> tuple[Any, ...]:
    try:
        payload: bytes | None = dumps(e)
    except Exception:
        payload = None
    return ("err", tid, payload, capture(e, skip_file=__file__), f"{type(e).__name__}: {e}")


class Runner:
    """Runs the parent's messages: ("fn", fid, pickled function) defines, ("task", tid, fid, payload) runs and
    returns its frame. The pipe loop below and the Ray actor (migpool.ray) both drive one."""

    def __init__(self) -> None:
        self.functions: dict[int, Any] = {}

    def handle(self, msg: tuple[Any, ...]) -> tuple[Any, ...] | None:
        import pickle

        if msg[0] == "fn":
            self.functions[msg[1]] = msg[2]
            return None
        _, tid, fid, payload = msg
        try:
            fn = self.functions[fid]
            if isinstance(fn, bytes):
                fn = self.functions[fid] = pickle.loads(fn)
            args, kwargs = pickle.loads(payload)
            result = fn(*args, **kwargs)
        except BaseException as e:
            return _error_frame(tid, e)
        try:
            return ("ok", tid, dumps(result))
        except Exception as e:
            return _error_frame(tid, TypeError(f"the task's result could not be pickled: {e}"))


def main(rfd: int, wfd: int) -> None:
    _die_with_parent(int(os.environ.get("MIGPOOL_PARENT_PID", os.getppid())))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    runner = Runner()
    write_frame(wfd, ("ready", os.getpid(), sys.executable))
    while True:
        try:
            msg = read_frame(rfd)
        except EOFError:
            return
        if msg[0] == "stop":
            return
        frame = runner.handle(msg)
        if frame is not None:
            write_frame(wfd, frame)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
