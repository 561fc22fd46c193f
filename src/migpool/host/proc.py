"""Small helpers about OS processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True if `pid` is a running process (a zombie that only waits to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def wait_gone(pids: Iterable[int], timeout: float, poll: float = 0.02) -> list[int]:
    """Wait up to `timeout` seconds for these processes to end; returns those still running then."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if pid_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(poll)
        left = [p for p in left if pid_alive(p)]
    return left
