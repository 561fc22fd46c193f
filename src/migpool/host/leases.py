"""Partition leases: who uses a MIG device (or a whole GPU) right now, machine-wide.

A lease is an exclusive `flock` on `<leases dir>/<UUID>.lease` (statedirs.py says where), held for as long as
its holder keeps the file open; the kernel drops it when the holder dies, so a killed pool leaves no stale lease.
The lock belongs to the open file description, not to a process: the holder passes its descriptor to the worker
on the partition and to every program that worker starts (`lease_env`, `inherited_fds`), so the kernel holds the
lease until the last of them is gone, and `status` never shows a partition free under a running program.
The file names the holder (PID, command, user, since when, and a token that tells two holders of one process
apart). Leases are taken and checked under the GPU's apply lock (reconcile.py), so that checking that a
partition is free and claiming it is one step: a pool never destroys or reuses a partition another holder
leases, and two pools never share one."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import LeasedError
from .locks import process_state
from .proc import pid_alive
from .safefiles import open_nofollow

SETTLE_S = 0.2  # how long a lease that looks held but names no holder (being written, or probed) is tried again
LEASE_FD_ENV = "MIGPOOL_LEASE_FD"  # "<descriptor>:<UUID>": the lease a process was given, open at that number


@dataclass(frozen=True)
class LeaseHolder:
    pid: int
    command: str
    user: str
    since: float  # seconds since the epoch
    token: str  # one per Leases object

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        text = f"PID {self.pid} ({self.command}) of {self.user}, since {when}"
        state = process_state(self.pid) if self.pid else None
        if state is not None and state[1].startswith("stopped"):  # (SIGSTOP or Ctrl-Z): it holds on till continued
            text += f", {state[1]} (kill -CONT {self.pid} lets it go on)"
        return text


def _command() -> str:
    text = " ".join([os.path.basename(sys.executable or "python"), *sys.argv]).strip()
    return text if len(text) <= 60 else text[:59] + "…"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.geteuid()}"


def _path(directory: Path, uuid: str) -> Path:
    if not uuid or "/" in uuid or uuid.startswith("."):
        raise ValueError(f"not a device UUID: {uuid!r}")
    return directory / f"{uuid}.lease"


UNKNOWN = LeaseHolder(0, "unknown: its lease file names no holder", "?", 0.0, "")


def _read_holder(fd: int) -> LeaseHolder | None:
    """The holder the file names, if that process still runs (else the name is a dead holder's, left behind)."""
    try:
        who = LeaseHolder(**json.loads(os.pread(fd, 4096, 0).decode("utf-8")))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None  # being written at this moment, or not migpool's
    return who if who.token and pid_alive(who.pid) else None


def holder(directory: Path, uuid: str) -> LeaseHolder | None:
    """Who leases `uuid` now (None: nobody). Reads only: `directory` need not be writable, nor exist."""
    path = _path(directory, uuid)
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _read_holder(fd)  # None: being taken, or probed by another reader at this moment
                if who is not None or time.monotonic() >= deadline:
                    return who or UNKNOWN
            else:
                return None  # a shared lock was free: nobody holds the exclusive one
        finally:
            os.close(fd)
        time.sleep(0.005)


def holders(directory: Path, uuids: Iterable[str], mine: Leases | None = None) -> dict[str, LeaseHolder]:
    """The UUIDs among `uuids` that someone other than `mine` leases, with their holders."""
    out = {}
    for u in uuids:
        if mine is not None and mine.holds(u):
            continue
        who = holder(directory, u)
        if who is not None:
            out[u] = who
    return out


def refusal(uuid: str, who: LeaseHolder, what: str) -> LeasedError:
    """The one-line error for a partition that another holder leases."""
    return LeasedError(
        f"{what}: {uuid} is leased by {who.describe()}. Close that pool or program, or wait for it (mig(wait=seconds))",
        who,
    )


class Leases:
    """The leases of one holder (a pool, a `migpool run`, a dynamic MIG controller) in this process."""

    def __init__(self, directory: Path, command: str | None = None) -> None:
        self.directory = directory
        self.holder = LeaseHolder(os.getpid(), command or _command(), _user(), time.time(), uuidlib.uuid4().hex)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def holds(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._fds

    @property
    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._fds)

    def fd(self, uuid: str) -> int | None:
        """The descriptor that holds the lease of `uuid` (None where this holder does not lease it)."""
        with self._lock:
            return self._fds.get(uuid)

    def take(self, uuid: str, what: str = "cannot lease the partition") -> None:
        """Lease `uuid`, or raise LeasedError naming its holder. Call it under the GPU's apply lock."""
        if self.holds(uuid):
            return
        path = _path(self.directory, uuid)
        deadline = time.monotonic() + SETTLE_S
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    who = _read_holder(fd)
                    if who is not None or time.monotonic() >= deadline:
                        raise refusal(uuid, who or UNKNOWN, what) from None
                    time.sleep(0.005)  # probed at this moment, or its holder is writing its name
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(self.holder)).encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            self._fds[uuid] = fd

    def release(self, uuid: str) -> None:
        with self._lock:
            fd = self._fds.pop(uuid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a reader never names a holder that has gone
            os.close(fd)

    def close(self) -> None:
        for u in self.held:
            self.release(u)


_open: dict[str, Leases] = {}  # a pool's leases in the process that holds them (its node's agent, on Ray)
_open_lock = threading.Lock()


@dataclass(frozen=True)
class LeaseKey:
    """Names one pool's leases across the calls that its plugin makes on a node (it travels with the plugin to
    a Ray node, where the node's agent holds them): `command` is the pool's program, named as the holder."""

    key: str
    command: str

    @classmethod
    def new(cls) -> LeaseKey:
        return cls(uuidlib.uuid4().hex, _command())

    def open(self, directory: Path) -> Leases:
        """The leases that this process holds under this key, made on first use."""
        with _open_lock:
            if self.key not in _open:
                _open[self.key] = Leases(directory, self.command)
            return _open[self.key]

    def fd(self, uuid: str) -> int | None:
        """The descriptor holding the lease of `uuid` under this key in this process (None: not held here)."""
        with _open_lock:
            leases = _open.get(self.key)
        return leases.fd(uuid) if leases is not None else None

    def close(self) -> None:
        """Release every lease held under this key in this process."""
        with _open_lock:
            leases = _open.pop(self.key, None)
        if leases is not None:
            leases.close()


def lease_env(fd: int | None, uuid: str) -> dict[str, str]:
    """What a process's environment says of the lease it is given (`fd`, passed to it at that number): its
    children pass it on (`inherited_fds`). An empty value where it is given none, so that a value inherited from
    further up is not taken for its own."""
    return {LEASE_FD_ENV: f"{fd}:{uuid}" if fd is not None else ""}


def inherited_fds(env: Mapping[str, str]) -> tuple[int, ...]:
    """The lease descriptor that `env` names, where this process has it open on that lease's file: the one to
    pass to a child (subprocess `pass_fds`), so that the kernel holds the lease while the child runs. Nothing
    where `env` names none, or names a descriptor that is closed or is another file now."""
    text = env.get(LEASE_FD_ENV, "")
    fd_text, _, uuid = text.partition(":")
    if not fd_text.isdigit() or not uuid:
        return ()
    fd = int(fd_text)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ()
    return (fd,) if os.path.basename(target) == f"{uuid}.lease" else ()
