"""A lock on a file that orders processes (through `flock` on the file) and the threads of one process (through a
lock in memory). Threads of one process that wait for each other wake at once, instead of polling the file: a
pool's threads (its controller, the thread that starts workers, a telemetry sampler) take the simulator's and the
journal's locks, and a file lock alone makes each wait a multiple of its poll.

The file is opened without following a symbolic link (safefiles.open_nofollow), since root takes these locks in
directories that a `migpool` group may write. The kernel drops the lock when its holder dies.

A wait that runs out names who holds the lock, as the kernel tells it (/proc/locks), and that process's state:
a holder stopped with SIGSTOP (or Ctrl-Z) holds its lock until it is continued or ended. A wait with no time
given is bounded by the innermost `waits_bounded` of the calling thread (apply bounds every lock wait inside
it, its driver's and journal's too, by its `--lock-timeout`); outside one it waits for as long as it takes."""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .safefiles import open_nofollow

POLL_S = 0.005  # how often a process that waits for another process's lock looks again

# what /proc/PID/stat's state letter means, in words
_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "waiting on a device",
    "T": "stopped",
    "t": "stopped by a debugger",
    "Z": "a zombie",
    "X": "dead",
    "I": "idle",
}


@dataclass(frozen=True)
class LockHolder:
    """A process that holds a file lock: its PID, its command name and its state ('running', 'stopped', ...)."""

    pid: int
    name: str
    state: str

    @property
    def stopped(self) -> bool:
        return self.state.startswith("stopped")

    def describe(self) -> str:
        who = f"PID {self.pid} ({self.name}{', this process' if self.pid == os.getpid() else ''})"
        if self.stopped:
            return (
                f"{who}, which is {self.state}: it holds the lock until it is continued (kill -CONT {self.pid}) or ends"
            )
        return f"{who}, {self.state}"


def process_state(pid: int) -> tuple[str, str] | None:
    """`pid`'s command name and state in words, or None when it is gone or cannot be read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = text.partition(" (")[2].rpartition(")")
    letter = rest.split()[0] if rest.split() else "?"
    return name, _STATES.get(letter, f"in state {letter}")


def holders(path: str | Path) -> list[LockHolder]:
    """The processes the kernel lists (/proc/locks) as holding a `flock` on the file at `path`; empty when
    nobody does, the file is missing, or this system does not tell."""
    try:
        st = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != where:  # a waiter's line has "->" in field 1
            continue
        pid = int(fields[4]) if fields[4].isdigit() else 0
        known = process_state(pid) if pid > 0 else None
        if known is not None:
            out.append(LockHolder(pid, *known))
    return out


class LockTimeout(TimeoutError):  # noqa: N818 - named like filelock.Timeout, which it replaces
    """The lock was not free within the time given. `holder`: who held it then, where the kernel tells."""

    def __init__(self, path: str, holder: LockHolder | None = None) -> None:
        super().__init__(f"the lock {path} was held by {holder.describe() if holder else 'another process'}")
        self.path = path
        self.holder = holder

    def who(self) -> str:
        """The holder in words: 'PID 123 (migpool), which is stopped: ...', or 'another process'."""
        return self.holder.describe() if self.holder else "another process"


def _timed_out(path: str) -> LockTimeout:
    found = holders(path)
    return LockTimeout(path, found[0] if found else None)


_bound: contextvars.ContextVar[float | None] = contextvars.ContextVar("migpool_lock_wait_bound", default=None)


@contextlib.contextmanager
def waits_bounded(seconds: float) -> Iterator[None]:
    """Within this block (in this thread), a lock wait with no time given waits at most `seconds`."""
    token = _bound.set(max(0.0, seconds))
    try:
        yield
    finally:
        _bound.reset(token)


def wait_bound() -> float | None:
    """The bound of the innermost `waits_bounded` around the caller, or None."""
    return _bound.get()


class _Shared:
    """What every PathLock of one path shares in this process: the threads' lock and the file lock's count."""

    def __init__(self) -> None:
        self.threads = threading.RLock()
        self.fd: int | None = None
        self.depth = 0


_guard = threading.Lock()
_by_path: dict[str, _Shared] = {}


class PathLock:
    """Reentrant in the thread that holds it (also through another PathLock of the same path). `acquire` raises
    LockTimeout on timeout, naming the holder."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with _guard:
            self._shared = _by_path.setdefault(self.path, _Shared())

    def acquire(self, timeout: float = -1) -> None:
        """Wait up to `timeout` seconds; if negative, up to the caller's `waits_bounded`, else forever."""
        bound = wait_bound()
        if timeout < 0 and bound is not None:
            timeout = bound
        sh = self._shared
        deadline = None if timeout < 0 else time.monotonic() + timeout
        if not sh.threads.acquire(timeout=-1 if deadline is None else timeout):
            raise _timed_out(self.path)  # another thread of this process holds it
        try:
            if sh.depth == 0:
                sh.fd = _flock(self.path, deadline)
            sh.depth += 1
        except BaseException:
            sh.threads.release()
            raise

    def release(self) -> None:
        sh = self._shared
        sh.depth -= 1
        if sh.depth == 0 and sh.fd is not None:
            os.close(sh.fd)  # closing the only descriptor drops the flock
            sh.fd = None
        sh.threads.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _flock(path: str, deadline: float | None) -> int:
    fd = open_nofollow(Path(path), os.O_RDWR | os.O_CREAT)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _timed_out(path) from None
                time.sleep(POLL_S)
    except BaseException:
        os.close(fd)
        raise
