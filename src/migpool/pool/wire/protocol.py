"""Length-prefixed frames on a pipe, between the parent and a worker process. A message (messages.py)
travels as a plain tuple, its kind's number first: a named tuple pickled by class costs several microseconds
more each way, which a pool of tiny tasks pays on every task.

A frame is a header (body length, number of descriptors) and its body; when the message holds a
segments.Packed, the segment's descriptor goes first through the Unix socket beside the pipe (SCM_RIGHTS). A
large body goes out in one writev and comes in without joining chunks; a segment's bytes never cross either.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

from .messages import (
    Answer,
    Call,
    Cancel,
    Checkpointed,
    Credit,
    DefineFunction,
    Feed,
    ForgetValue,
    FromWorker,
    Pause,
    Paused,
    Ready,
    Released,
    RunTask,
    Stop,
    StoreValue,
    TaskDone,
    TaskFailed,
    ToWorker,
    Want,
    Withdraw,
    Yielded,
)
from .segments import Packed, Release, Segment

_HEADER = struct.Struct("!QI")
_KINDS: tuple[type[Any], ...] = (
    DefineFunction,
    RunTask,
    Stop,
    Ready,
    TaskDone,
    TaskFailed,
    StoreValue,
    ForgetValue,
    Credit,
    Cancel,
    Feed,
    Yielded,
    Want,
    Released,
    Call,
    Withdraw,
    Answer,
    Pause,
    Checkpointed,
    Paused,
)
_NUMBER = {kind: i for i, kind in enumerate(_KINDS)}
_WIDTH = tuple(len(kind.__match_args__) + 1 for kind in _KINDS)  # each kind's wire tuple: its number, its fields
_VALUE_FIELD = {RunTask: 2, TaskDone: 1, StoreValue: 1, Feed: 2, Yielded: 1}  # where a Packed may be
_BY_NUMBER = {_NUMBER[k]: i + 1 for k, i in _VALUE_FIELD.items()}  # the same, as an index into the wire tuple
_MARK = b"\0"
READ_CHUNK = 1 << 20
SMALL = 64 << 10  # a body this small goes out joined to its header
MAX_BODY = 1 << 62  # no frame says more (only a garbage header does): more than any address space holds


class FrameError(ValueError):
    """What came down a channel is no frame (a header that makes no sense, a body that does not unpickle into a
    message): the sender wrote garbage to its channel."""


class End:
    """One end of a one-way channel: a pipe for the frames (the fastest path for small ones) and, beside it, a
    Unix socket that carries the descriptors of segments (SCM_RIGHTS), in the order of their frames. The socket
    module is imported when the first descriptor travels, so a worker of small tasks starts without it."""

    __slots__ = ("fd", "side_fd", "_side")

    def __init__(self, fd: int, side_fd: int) -> None:
        self.fd = fd
        self.side_fd = side_fd
        self._side: Any = None

    @property
    def side(self) -> Any:
        if self._side is None:
            import socket

            self._side = socket.socket(fileno=self.side_fd)
        return self._side

    def fileno(self) -> int:
        return self.fd

    def fds(self) -> tuple[int, int]:
        return self.fd, self.side_fd

    def spec(self) -> str:
        """How a child process names this end on its command line (its descriptors passed as they are)."""
        return f"{self.fd}:{self.side_fd}"

    @classmethod
    def from_spec(cls, spec: str) -> End:
        fd, side = (int(x) for x in spec.split(":"))
        return cls(fd, side)

    def close(self) -> None:
        os.close(self.fd)
        if self._side is not None:
            self._side.close()
        else:
            os.close(self.side_fd)


def _socket() -> Any:
    import socket

    return socket


def channel() -> tuple[End, End]:
    """A one-way channel: (the end to read, the end to write)."""
    import socket

    r, w = os.pipe()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return End(r, a.detach()), End(w, b.detach())


def write_frame(end: End, msg: ToWorker | FromWorker, peer: int = 0) -> int:
    """Send `msg`; a segment it holds goes to receiver `peer` (counted by the segment's Recycler until released).
    The number of bytes written to the pipe."""
    kind = type(msg)
    fields: tuple[Any, ...] = (_NUMBER[kind], *msg)
    at = _VALUE_FIELD.get(kind)
    nfds = 0
    p = msg[at] if at is not None else None
    if type(p) is Packed:
        seg = p.segment
        where = (p.body, seg.size, p.spans, seg.sid) if not seg.base else (p.body, seg.size, p.spans, seg.sid, seg.base)
        fields = (*fields[: at + 1], where, *fields[at + 2 :])  # type: ignore[operator]
        if seg.recycler is not None:
            seg.recycler.sent(seg.sid, peer)
        _socket().send_fds(end.side, [_MARK], [seg.fd])  # before its frame: the reader finds it waiting
        nfds = 1
    body = pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)  # plain data: values are packed already
    if len(body) < SMALL:  # the usual frame: one write, the copy costs less than a gathered one
        data = memoryview(_HEADER.pack(len(body), nfds) + body)
        size = data.nbytes
        while data:
            data = data[os.write(end.fd, data) :]
        return size
    views = [memoryview(_HEADER.pack(len(body), nfds)), memoryview(body)]
    while views:
        n = os.writev(end.fd, views)
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
    return _HEADER.size + len(body)


def _read_exact(fd: int, n: int) -> bytes | bytearray | None:
    if n <= READ_CHUNK:
        first = os.read(fd, n)
        if len(first) == n:
            return first
        if not first:
            return None
        buf = bytearray(n)
        buf[: len(first)] = first
        got = len(first)
    else:
        buf, got = bytearray(n), 0
    view = memoryview(buf)
    while got < n:
        k = os.readv(fd, [view[got:]])
        if not k:
            return None
        got += k
    return buf


def read_frame(end: End, release: Release | None = None) -> Any:
    """The next message, or raises EOFError when the other end is gone, FrameError when what came is no frame
    (MemoryError when its body does not fit in this process). A segment it brings tells `release` when this side
    has unmapped it."""
    head = _read_exact(end.fd, _HEADER.size)
    if head is None:
        raise EOFError
    size, nfds = _HEADER.unpack(head)
    if nfds > 1 or size > MAX_BODY:
        raise FrameError(f"a frame header says {size} bytes and {nfds} descriptors")
    fd = -1
    if nfds:
        # the descriptor was sent before its frame, so it waits on the socket already: never block for it
        try:
            _, fds, _, _ = _socket().recv_fds(end.side, 1, nfds, _socket().MSG_DONTWAIT)
        except BlockingIOError:
            fds = []
        if not fds:
            raise FrameError("a frame says it brings a descriptor, and none came with it")
        for extra in fds[1:]:
            os.close(extra)
        fd = fds[0]
    body = _read_exact(end.fd, size)
    if body is None:
        if fd >= 0:
            os.close(fd)
        raise EOFError
    try:
        fields = pickle.loads(body)
        kind = _KINDS[fields[0]]
        if len(fields) != _WIDTH[fields[0]]:
            raise ValueError(f"{len(fields) - 1} fields for a {kind.__name__}")
        if fd >= 0:
            at = _BY_NUMBER[fields[0]]
            data, seg_size, spans, sid, *base = fields[at]
            seg = Segment(fd, seg_size, sid, base=base[0] if base else 0)
            fd = -1  # (the segment holds it now)
            seg.release = release
            fields = (*fields[:at], Packed(data, seg, spans), *fields[at + 1 :])
        return tuple.__new__(kind, fields[1:])  # the named tuple, without its Python-level __new__
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever garbage raises, it is one error: no frame
        raise FrameError(f"a frame's body is no message ({type(e).__name__}: {e})") from None
    finally:
        if fd >= 0:
            os.close(fd)
