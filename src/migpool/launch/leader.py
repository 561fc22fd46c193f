"""A copy's leader: the process between a worker and the program of one `migpool run` copy,
`python -m migpool.launch.leader STATUS_FD PARENT_PID ARGV_JSON`.

It joins the copy's container before anything else (`containment.enter`: the cgroup the worker made for the
copy, or, where there is none, it becomes the subreaper of everything below it), then starts the program in a
session of its own, passing on the partition's lease descriptor, and reports on STATUS_FD one JSON line when the
program started (`{"pid": N}`, or `{"error": "..."}` when it could not) and one when it exited (`{"status": S}`,
negative: the signal that killed it). SIGTERM and SIGINT are passed on to the program's process group.

The worker ends the container once the program has exited, so what the program left running ends with it. If
the worker dies first (killed, or ended with `migpool run` itself), the kernel tells the leader through a pidfd
and the leader ends the container: a copy never outlives its worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from typing import Any, NoReturn

from ..host import containment
from ..host.leases import inherited_fds

POLL_S = 0.2  # where pidfds are missing: how often the parent and the program are looked at


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _report(fd: int, **what: Any) -> None:
    with contextlib.suppress(OSError):  # the worker is gone: the parent watch ends this process
        os.write(fd, (json.dumps(what) + "\n").encode())


class Leader:
    """One copy's leader: its container, its parent (the worker) and its program."""

    def __init__(self, status_fd: int, parent: int) -> None:
        self.status_fd = status_fd
        self.parent = parent
        self.container = containment.enter()
        self.parent_fd = _pidfd(parent)
        self.program: subprocess.Popen[bytes] | None = None
        self.stopped_by = 0  # a stop that came before the program started
        if os.getppid() != parent:  # the worker died before the pidfd was opened
            self.end()

    def end(self) -> NoReturn:
        """End the container: the program, what it left running and this process. A cgroup is ended from just
        outside it (this process moved to the cgroup above), so that it can be removed once empty."""
        cgroup = self.container.cgroup if self.container is not None else None
        if cgroup is not None:
            try:
                (cgroup.parent / "cgroup.procs").write_text("0")
            except OSError:
                pass
            else:
                containment.Container("cgroup", cgroup).end()
                os._exit(1)
        containment.end_own(self.container)
        raise AssertionError("end_own returned")  # pragma: no cover

    def _pass_on(self, signum: int, frame: object) -> None:
        if self.program is None:
            self.stopped_by = signum  # `start` sees it
            return
        with contextlib.suppress(OSError):
            os.killpg(self.program.pid, signum)

    def start(self, argv: list[str]) -> bool:
        """Start the program; report it. False when it could not start."""
        for s in (signal.SIGTERM, signal.SIGINT):  # a handler, not SIG_IGN: the program gets the defaults
            signal.signal(s, self._pass_on)
        env = {k: v for k, v in os.environ.items() if k != containment.CONTAINER_ENV}  # the copy's, not its own
        if self.stopped_by:
            _report(self.status_fd, error="stopped before it started")
            return False
        try:
            self.program = subprocess.Popen(
                argv,
                env=env,
                pass_fds=inherited_fds(env),
                start_new_session=True,  # a group a stop reaches whole
            )
        except OSError as e:
            _report(self.status_fd, error=f"{argv[0]}: {e.strerror or e}")
            return False
        _report(self.status_fd, pid=self.program.pid)
        if self.stopped_by:  # it came as the program started
            self._pass_on(self.stopped_by, None)
        return True

    def _parent_gone(self, ready: list[int]) -> bool:
        return (self.parent_fd is not None and self.parent_fd in ready) or os.getppid() != self.parent

    def wait(self) -> int:
        """Wait until the program exits, and report its status; if the worker dies first, end the container."""
        assert self.program is not None
        program_fd = _pidfd(self.program.pid)
        fds = [f for f in (self.parent_fd, program_fd) if f is not None]
        timeout = None if len(fds) == 2 else POLL_S
        while True:
            ready = select.select(fds, [], [], timeout)[0]
            if self._parent_gone(ready):
                self.end()
            if program_fd is None or program_fd in ready:
                status = self.program.poll()
                if status is not None:
                    _report(self.status_fd, status=status)
                    return status

    def linger(self) -> NoReturn:
        """After the program: wait to be ended by the worker with the container, or end it when the worker dies."""
        fds = [self.parent_fd] if self.parent_fd is not None else []
        while True:
            ready = select.select(fds, [], [], None if fds else POLL_S)[0]
            if self._parent_gone(ready):
                self.end()


def main(args: list[str]) -> None:
    status_fd, parent, argv = int(args[0]), int(args[1]), json.loads(args[2])
    leader = Leader(status_fd, parent)
    if leader.start(argv):
        leader.wait()
    leader.linger()


if __name__ == "__main__":
    main(sys.argv[1:])
