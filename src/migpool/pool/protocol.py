"""Length-prefixed frames over a pipe, between the parent and a worker process. A message (messages.py) travels
as a plain tuple, its kind's number first: a named tuple pickled by class costs several microseconds more each
way, which a pool of tiny tasks pays on every task."""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

from .messages import DefineFunction, FromWorker, Ready, RunTask, Stop, TaskDone, TaskFailed, ToWorker
from .pickling import dumps

_HEADER = struct.Struct("!Q")
_KINDS: tuple[type[Any], ...] = (DefineFunction, RunTask, Stop, Ready, TaskDone, TaskFailed)
_NUMBER = {kind: i for i, kind in enumerate(_KINDS)}


def write_frame(fd: int, msg: ToWorker | FromWorker) -> None:
    body = dumps((_NUMBER[type(msg)], *msg))
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    """The next message, or raises EOFError when the other end is gone."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        raise EOFError
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    if body is None:
        raise EOFError
    fields = pickle.loads(body)
    return tuple.__new__(_KINDS[fields[0]], fields[1:])  # the named tuple, without its Python-level __new__
