"""A warm spare: a worker process started before its partition is known (pool/scheduler/spares.py keeps them).

It joins its container and asks the kernel to end it with the pool, exactly as a worker does, imports the pool's
preload modules, says so on its ready pipe, and waits. Its environment then holds nothing of a partition: no
CUDA_VISIBLE_DEVICES, no lease, no worker index. The pool hands it a partition by writing one handoff on the
channel that will carry the worker's frames: the worker's whole environment (its lease's descriptor beside it,
through the channel's Unix socket). The spare puts that environment in place of its own and runs the worker's
`main`. Nothing here touches a GPU: CUDA reads CUDA_VISIBLE_DEVICES when it initialises, so an environment set
before the first CUDA call is the one CUDA sees. A preload module that initialises CUDA when imported breaks that
promise; frameworks (torch, jax) do not.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import struct
import sys
from collections.abc import Mapping, Sequence

from ...host import containment
from ..wire.protocol import End

SPARE_ENV = "MIGPOOL_SPARE"  # in a spare: the descriptor of its ready pipe (one byte once its imports are done)
PRELOAD_ENV = "MIGPOOL_PRELOAD"  # the modules a spare imports while it waits, comma-separated
PARENT_ENV = "MIGPOOL_PARENT_PID"
_HEADER = struct.Struct("!QI")  # the handoff's body length and the number of descriptors beside it


PARKED, GPU_OPENED = b"1", b"G"  # what a spare says on its ready pipe once its imports are done


def opened_gpu() -> bool:
    """Whether this process holds a GPU device open (/dev/nvidia*): an import initialised CUDA, or the driver."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/nvidia"):
                return True
    return False


def preload(names: Sequence[str]) -> list[str]:
    """Import each module; the names of those that failed (their own tasks meet the error where it matters)."""
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - a module that fails here is left to the task that imports it
            failed.append(name)
    return failed


def hand_over(end: End, env: Mapping[str, str], fds: Sequence[int]) -> None:
    """From the pool: give the spare on the other side of `end` its worker's environment and descriptors."""
    if fds:
        import socket

        socket.send_fds(end.side, [b"\0"], list(fds))  # before the handoff: it waits on the socket when read
    body = pickle.dumps(dict(env), protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(_HEADER.pack(len(body), len(fds)) + body)
    while data:
        data = data[os.write(end.fd, data) :]


def _read(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = os.read(fd, n - len(out))
        if not got:
            raise EOFError
        out += got
    return out


def take_over(end: End) -> dict[str, str]:
    """In the spare: wait for the handoff and return the worker's environment, its lease's descriptor renamed to
    the number it has here (raises EOFError when the pool went away first)."""
    size, nfds = _HEADER.unpack(_read(end.fd, _HEADER.size))
    fds: list[int] = []
    if nfds:
        import socket

        side = socket.socket(fileno=end.side_fd)
        try:
            _, fds, _, _ = socket.recv_fds(side, 1, nfds)
        finally:
            side.detach()  # (the worker's channel keeps the descriptor: this object must not close it)
    env: dict[str, str] = pickle.loads(_read(end.fd, size))
    from ...host.leases import LEASE_FD_ENV  # (here: a worker started fresh never imports leases)

    _, _, uuid = env.get(LEASE_FD_ENV, "").partition(":")
    if fds and uuid:
        os.set_inheritable(fds[0], True)  # (as pass_fds leaves it in a worker started cold)
        env[LEASE_FD_ENV] = f"{fds[0]}:{uuid}"
    return env


def park(read_end: str) -> None:
    """A spare's life until its partition comes: contained and tied to the pool as a worker is, its imports done,
    waiting. Returns once the worker's environment is in place (the caller runs the worker), or ends the
    process when the pool goes first."""
    container = containment.enter()
    containment.arm_parent_death(container, int(os.environ.get(PARENT_ENV, os.getppid())))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool decides what Ctrl-C stops
    ready = int(os.environ.get(SPARE_ENV, "-1"))
    preload([n for n in os.environ.get(PRELOAD_ENV, "").split(",") if n])
    touched = opened_gpu()
    if ready >= 0:
        with contextlib.suppress(OSError):
            os.write(ready, GPU_OPENED if touched else PARKED)
            os.close(ready)
    try:
        env = take_over(End.from_spec(read_end))
    except (EOFError, OSError, ValueError, struct.error):
        containment.end_own(container)  # the pool closed its end: nothing to serve
        raise SystemExit(1) from None  # (end_own does not return)
    if touched:  # an import opened a GPU before the partition was known: start afresh, as a worker started cold
        os.execve(sys.executable, [sys.executable, "-m", "migpool.pool.worker", *sys.argv[1:]], env)
    os.environ.clear()
    os.environ.update(env)
