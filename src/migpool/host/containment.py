"""Containers for the processes migpool starts: every process a worker, a task or a `migpool run` copy starts
belongs to one, and migpool ends it whole on every exit path.

Two kinds, the best this machine allows (`kind()` says which):

- **cgroup**: a cgroup v2 directory per container, made below the cgroup this process runs in (root, or a
  delegated subtree as systemd gives with `Delegate=yes`). A process that forks, double-forks or starts its own
  session stays in it: the kernel moves every child into its parent's cgroup. Ending it is one write to
  `cgroup.kill` (Linux 5.14+), carried out by the kernel for every member at once, forks in flight included; on
  older kernels the group is frozen, each member killed, then thawed. `cgroup.events` says when it is empty. This
  is how Slurm's cgroup proctrack and systemd's units contain their processes.
- **sweep**: where no writable cgroup v2 exists (a container without delegation, a user session), the
  container's leader is made a child subreaper (PR_SET_CHILD_SUBREAPER), so its orphaned descendants, daemons
  included, are re-parented to it rather than to PID 1; ending it kills every descendant through a pidfd (a pidfd
  names one process, so a reused PID is never signalled), children before the leader. A leader killed from
  outside leaves its orphans to the next subreaper up (or PID 1): they are found by the container's token, which
  every member's environment carries, and killed the same way (`sweep_orphans`).

A leader whose parent dies is told so by the kernel (PR_SET_PDEATHSIG, `arm_parent_death`) and ends its own
container at once: a pool or `migpool run` killed with SIGKILL leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CONTAINER_ENV = "MIGPOOL_CONTAINER"  # what a leader joins at its start: "cgroup:<dir>" or "sweep:<token>"
CGROUP_ENV = "MIGPOOL_CGROUP"  # "0" turns cgroups off (the sweep is used); a directory: make containers there
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GONE_WAIT_S = 5.0  # the longest `end()` waits for the kernel to report the container empty
_seq = itertools.count()
_lock = threading.Lock()


def _prctl(option: int, value: int) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split()[:1] == ["cgroup2"]:
                    return Path(left.split()[4])
    except OSError:
        return None
    return None


def own_cgroup() -> Path | None:
    """This process's cgroup v2 directory, or None where there is none."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                hid, controllers, path = line.rstrip("\n").split(":", 2)
                if hid == "0" and not controllers:
                    d = mount / path.lstrip("/")
                    return d if d.is_dir() else None
    except (OSError, ValueError):
        return None
    return None


def _cgroup_base() -> Path | None:
    """Where new containers go: $MIGPOOL_CGROUP, else this process's own cgroup, if it may be written."""
    setting = os.environ.get(CGROUP_ENV, "")
    if setting == "0" or not sys.platform.startswith("linux"):
        return None
    base = Path(setting) if setting else own_cgroup()
    if base is None or not os.access(base, os.W_OK) or not (base / "cgroup.procs").exists():
        return None
    return base


_kind: str | None = None


def kind() -> str:
    """ "cgroup" or "sweep": what containers are on this machine (tried once per process: a cgroup made and removed)."""
    global _kind
    with _lock:
        if _kind is None:
            _kind = "sweep"
            base = _cgroup_base()
            if base is not None:
                probe = base / f"migpool-probe-{os.getpid()}"
                try:
                    probe.mkdir()
                    probe.rmdir()
                    _kind = "cgroup"
                except OSError:
                    pass
        return _kind


def _members(cgroup: Path) -> list[int]:
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _populated(cgroup: Path) -> bool:
    try:
        for line in (cgroup / "cgroup.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "populated":
                return value.strip() == "1"
    except OSError:
        return False
    return bool(_members(cgroup))


def children(pid: int) -> list[int]:
    """The children of process `pid` (every thread's), from /proc."""
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


def kill_by_pidfd(pid: int) -> bool:
    """SIGKILL `pid` through a pidfd (never a process that reused the number); False where it was gone."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, AttributeError):
        return False
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        return True
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def sweep_descendants(pid: int, rounds: int = 50) -> int:
    """Kill every descendant of `pid`, deepest last found first, until a pass finds none (a process that forks
    while the sweep runs is found on the next pass). How many were signalled."""
    killed = 0
    for _ in range(rounds):
        found: list[int] = []
        todo = children(pid)
        while todo:
            p = todo.pop()
            found.append(p)
            todo += children(p)
        if not found:
            break
        for p in reversed(found):
            killed += kill_by_pidfd(p)
        time.sleep(0.002)
    return killed


@dataclass
class Container:
    """One container. Made in the parent (`Container.make`), joined by its leader (`enter`), ended by whoever
    outlives it (`end`): the parent, or the leader itself when its parent died."""

    kind: str  # "cgroup" or "sweep"
    cgroup: Path | None = None  # the directory (cgroup kind)
    leader: int | None = None  # the leader's PID (sweep kind: what is swept below)
    token: str = ""  # (sweep kind) in every member's environment: finds those the leader's death let go

    @classmethod
    def make(cls, name: str = "c", want: str | None = None) -> Container:
        """A new container: of this machine's kind (`kind()`), or the sweep kind where `want` says "sweep"."""
        if (want or kind()) == "cgroup":
            base = _cgroup_base()
            if base is not None:
                remove_stale(base)
                d = base / f"migpool-{os.getpid()}-{next(_seq)}-{name}"
                try:
                    d.mkdir()
                    return cls("cgroup", d)
                except OSError:
                    pass
        return cls("sweep", token=f"{os.getpid()}-{next(_seq)}")

    def env(self) -> dict[str, str]:
        """What the leader's environment carries, so that it joins at its start (`enter`)."""
        return {CONTAINER_ENV: f"cgroup:{self.cgroup}" if self.cgroup is not None else f"sweep:{self.token}"}

    def add(self, pid: int, joins_itself: bool = False) -> None:
        """Put process `pid` (just started, nothing forked yet) in the container. One that joins by itself first
        thing (`enter`) is only noted: moving a process between cgroups costs the kernel milliseconds, and the
        starter of a pool's workers pays them one after the other."""
        if self.cgroup is not None and not joins_itself:
            try:
                (self.cgroup / "cgroup.procs").write_text(str(pid))
                return
            except OSError:
                pass
        self.leader = pid

    def pids(self) -> list[int]:
        """The processes in the container now (the sweep kind: the leader and its descendants)."""
        if self.cgroup is not None:
            return _members(self.cgroup)
        if self.leader is None:
            return []
        out, todo = [], [self.leader]
        while todo:
            p = todo.pop()
            if os.path.exists(f"/proc/{p}"):
                out.append(p)
                todo += children(p)
        return out

    def limit_memory(self, max_bytes: int | None) -> bool:
        """(The cgroup kind) Have the kernel hold the container's memory at `max_bytes` (memory.max, no swap),
        or lift the limit (None). False where it cannot: the sweep kind, or no memory controller on this cgroup."""
        if self.cgroup is None:
            return False
        try:
            (self.cgroup / "memory.max").write_text("max" if max_bytes is None else str(max_bytes))
        except OSError:
            return False
        with contextlib.suppress(OSError):  # (a kernel without swap accounting: the memory limit alone)
            (self.cgroup / "memory.swap.max").write_text("max" if max_bytes is None else "0")
        return True

    def oom_kills(self) -> int:
        """(The cgroup kind) How many of its processes the kernel killed at its memory limit (memory.events)."""
        if self.cgroup is None:
            return 0
        try:
            for line in (self.cgroup / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return 0
        return 0

    def end(self, wait: float = GONE_WAIT_S) -> bool:
        """Kill every process in the container and wait (at most `wait` s) until the kernel says it is empty;
        remove it. True when it is empty."""
        if self.cgroup is None:
            if self.leader is not None:
                sweep_descendants(self.leader)
                kill_by_pidfd(self.leader)
            self.sweep_orphans()
            return True
        kill_cgroup(self.cgroup)
        deadline = time.monotonic() + wait
        while _populated(self.cgroup) and time.monotonic() < deadline:
            time.sleep(0.002)
            for p in _members(self.cgroup):  # a kernel without cgroup.kill: what the freeze pass missed
                kill_by_pidfd(p)
        empty = not _populated(self.cgroup)
        if empty:
            remove_tree(self.cgroup)
        return empty

    def sweep_orphans(self) -> int:
        """(The sweep kind) Kill what its members left that no longer descends from its leader: a leader killed
        from outside (SIGKILL) hands its orphans, a task's daemon say, to the next subreaper up or PID 1; they
        still carry the container's token in their environment. How many were signalled."""
        if not self.token:
            return 0
        needle = f"\0{CONTAINER_ENV}=sweep:{self.token}\0".encode()
        uid, me, killed = os.getuid(), os.getpid(), 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                if os.stat(f"/proc/{name}").st_uid != uid:
                    continue
                with open(f"/proc/{name}/environ", "rb") as f:
                    found = needle in b"\0" + f.read()
            except OSError:
                continue
            if found:
                killed += sweep_descendants(int(name)) + kill_by_pidfd(int(name))
        return killed


def remove_stale(base: Path) -> None:
    """Remove the emptied containers that processes now gone left below `base` (a maker killed with SIGKILL
    leaves its cgroup directory behind: the kernel emptied it, nobody removed it)."""
    for d in base.glob("migpool-*"):
        maker = d.name.split("-")[1]
        if maker.isdigit() and not os.path.exists(f"/proc/{maker}") and not _populated(d):
            remove_tree(d)


def kill_cgroup(cgroup: Path) -> None:
    """Every member of `cgroup` killed: `cgroup.kill` where the kernel has it, else freeze, kill each, thaw."""
    try:
        (cgroup / "cgroup.kill").write_text("1")
        return
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EINVAL, errno.EACCES, errno.EPERM):
            raise
    freeze = cgroup / "cgroup.freeze"
    try:
        freeze.write_text("1")
    except OSError:
        freeze = None  # type: ignore[assignment]
    for p in _members(cgroup):
        kill_by_pidfd(p)
    if freeze is not None:
        with contextlib.suppress(OSError):
            freeze.write_text("0")


def enter() -> Container | None:
    """In a leader, first thing: join the container named in its environment (a cgroup), or become the
    subreaper of its descendants (the sweep kind). None where it was started outside any container."""
    spec = os.environ.get(CONTAINER_ENV)
    if not spec:
        return None
    if spec.startswith("cgroup:"):
        cg = Path(spec.removeprefix("cgroup:"))
        try:
            (cg / "cgroup.procs").write_text("0")
        except OSError:
            pass
        else:
            return Container("cgroup", cg, os.getpid())
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    return Container("sweep", None, os.getpid(), spec.partition(":")[2])


def remove_tree(cgroup: Path) -> None:
    """Remove an emptied cgroup and the cgroups below it (a worker's holds its copies'), deepest first."""
    for d in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        cgroup.rmdir()


def end_own(container: Container | None) -> None:
    """From inside a leader: end everything in its container, then itself (never returns). A cgroup's leader
    steps out to the parent cgroup first, so that it lives to remove the emptied cgroup and those below it."""
    if container is not None and container.cgroup is not None:
        cg = container.cgroup
        with contextlib.suppress(OSError):
            (cg.parent / "cgroup.procs").write_text("0")
        with contextlib.suppress(OSError):
            kill_cgroup(cg)  # (where the step out failed, the kernel kills this process too)
        deadline = time.monotonic() + GONE_WAIT_S
        while _populated(cg) and time.monotonic() < deadline:
            time.sleep(0.002)
        remove_tree(cg)
    sweep_descendants(os.getpid())
    os._exit(1)


def arm_parent_death(container: Container | None, parent: int) -> None:
    """Have the kernel tell this leader when `parent` dies (SIGHUP through PR_SET_PDEATHSIG), and end its
    container then. A parent already gone ends it at once."""

    def on_parent_death(signum: int, frame: object) -> None:
        end_own(container)

    signal.signal(signal.SIGHUP, on_parent_death)
    _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != parent:  # it died before the request was made
        end_own(container)
