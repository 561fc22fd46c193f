"""Length-prefixed frames of pickled tuples over a pipe, between the parent and a worker process."""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

from .pickling import dumps

_HEADER = struct.Struct("!Q")


def write_frame(fd: int, obj: Any) -> None:
    body = dumps(obj)
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
    """The next object, or raises EOFError when the other end is gone."""
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        raise EOFError
    body = _read_exact(fd, _HEADER.unpack(head)[0])
    if body is None:
        raise EOFError
    return pickle.loads(body)
