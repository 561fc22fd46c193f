"""Nothing the pool's collections hand out goes to a dead process: what the parent asks the kernel before it answers
a worker's waiting call, and how it takes back an answer that the worker never read.

A worker can be killed at any instant, and the parent hears of it (its pidfd, its pipe) only milliseconds later.
`Liveness` answers in between: a process that has ended (a zombie) or has SIGKILL pending cannot take an answer,
whatever its threads are doing. `Lent` covers the rest: an answer that hands something over (a queue's item) is
kept with what undoes it until the worker has read its frame, which the kernel's count of the bytes still unread in
the pipe tells (FIONREAD, answered on the pipe's write end too); if the worker is gone first, it is undone.
"""

from __future__ import annotations

import array
import collections
import fcntl
import os
import signal
import termios
import threading
from collections.abc import Callable

_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _doomed(status: bytes) -> bool:
    """Whether a /proc/<pid>/status says the process has ended or will (SIGKILL pending)."""
    if not status:
        return True  # (reaped: nothing left to read)
    at = status.find(b"State:")
    if at >= 0 and status[at + 6 :].lstrip()[:1] in (b"Z", b"X"):
        return True
    for key in (b"ShdPnd:", b"SigPnd:"):
        at = status.find(key)
        if at >= 0:
            end = status.find(b"\n", at)
            if int(status[at + len(key) : end if end >= 0 else None], 16) & _SIGKILL_BIT:
                return True
    return False


class Liveness:
    """Whether process `pid` can still take an answer, as its /proc status says at the moment of asking (held
    open from the start, so that it names this process, never a later one with its number)."""

    __slots__ = ("pid", "_fd", "_lock")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._lock = threading.Lock()  # (held only to read or close the descriptor: never while waiting)
        try:
            self._fd: int | None = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._fd = -1  # already reaped
        except OSError:
            self._fd = None  # no /proc here: it cannot tell, and says alive

    def alive(self) -> bool:
        with self._lock:
            if self._fd is None:
                return True
            if self._fd < 0:
                return False
            try:
                return not _doomed(os.pread(self._fd, 4096, 0))
            except OSError:  # ESRCH: reaped
                return False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._fd >= 0:
                os.close(self._fd)
            self._fd = -1


def unread(fd: int) -> int:
    """How many bytes written to the pipe of `fd` (either end) no reader has taken yet."""
    n = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, n)
    return n[0]


class Lent:
    """The answers written to one pipe that hand something over, each with the place its frame ends in everything
    written to the pipe and what undoes it, until the reader has read that far. Not thread-safe: its writer's
    lock guards it."""

    __slots__ = ("fd", "written", "_items")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.written = 0  # bytes written to the pipe, ever
        self._items: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()

    def wrote(self, n: int, undo: Callable[[], None] | None = None) -> None:
        """`n` more bytes were written: one frame, handing over what `undo` takes back (None: nothing)."""
        self.written += n
        if undo is not None:
            self._items.append((self.written, undo))
        if self._items:
            try:
                read = self.written - unread(self.fd)
            except OSError:  # (kept until the next count, or until `unread`)
                return
            while self._items and self._items[0][0] <= read:
                self._items.popleft()

    def unread(self) -> list[Callable[[], None]]:
        """The undoing of every answer the reader has not read whole (it is gone: call before the pipe closes);
        forgets them all."""
        if not self._items:
            return []
        try:
            read = self.written - unread(self.fd)
        except OSError:  # (no count to go by: nothing is taken back rather than something handed out twice)
            read = self.written
        out = [undo for end, undo in self._items if end > read]
        self._items.clear()
        return out

    def __len__(self) -> int:
        return len(self._items)
