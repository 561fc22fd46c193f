"""How `migpool run` is stopped: by a signal (Ctrl-C, SIGTERM, SIGHUP) at any moment, or by its output being
closed (`| head`, or `| tee` ended by the same Ctrl-C). Either way every copy is stopped and the pool closed
before it exits; the exit status is 128 + the first signal (130 for Ctrl-C), else 141 (SIGPIPE's) when only its
output was closed."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CLOSED_OUTPUT_STATUS = 128 + signal.SIGPIPE


class Stopped(KeyboardInterrupt):
    """A signal stopped `migpool run` before its jobs started: raised on the main thread, it unwinds the set-up
    (a pool being opened closes; a layout being applied rolls back) as Ctrl-C's KeyboardInterrupt does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def closed(e: BaseException) -> bool:
    """Whether `e` says that the reader of an output went away (a broken pipe, or a file closed under us)."""
    if isinstance(e, ValueError):
        return "closed file" in str(e)
    return isinstance(e, OSError) and e.errno in (errno.EPIPE, errno.EBADF)


class Stop:
    """Owns SIGINT, SIGTERM and SIGHUP for one run, on the main thread, from `__enter__` to `__exit__` (a signal
    ignored when it started, as `nohup` leaves SIGHUP, stays ignored).

    Until `divert` is called a signal raises `Stopped` on the main thread; after it, the signal only goes to the
    function given (which must not block nor take a lock: the run's wakes its event loop), so that a stop
    already under way, or the pool's close, is never cut short. `status()` is the exit status the run owes."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.output_closed = False
        self._divert: Callable[[int], None] | None = None
        self._before: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                before = signal.getsignal(s)
                if before is not signal.SIG_IGN:
                    self._before[s] = before
                    signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, before in self._before.items():
            signal.signal(s, before)
        self._before.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        divert = self._divert
        if divert is None:
            raise Stopped(signum)
        divert(signum)

    def divert(self, to: Callable[[int], None]) -> None:
        """From now on, a signal calls `to` (with its number) instead of raising."""
        self._divert = to

    def status(self) -> int | None:
        """128 + the first signal; 141 when only the output was closed; None when nothing stopped the run."""
        if self.signals:
            return 128 + self.signals[0]
        return CLOSED_OUTPUT_STATUS if self.output_closed else None


def write(stream: TextIO, text: str) -> bool:
    """Write and flush `text`; False when the stream's reader went away."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError) as e:
        if not closed(e):
            raise
        return False
    return True


def quiet_closed_output() -> None:
    """Point a closed stdout or stderr at /dev/null, so that Python's last flush on exit neither fails (exit
    status 120) nor complains on a stream nobody reads."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError) as e:
            if not closed(e):
                raise
            with contextlib.suppress(OSError, ValueError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)
