"""Large values out of band: pickled with protocol 5, their large buffers written once into a memfd segment
whose descriptor travels over the worker's channel (protocol.py) and is mapped by the receiver without a copy.

A NumPy array, a bytearray or a memoryview (any object whose pickling offers a PickleBuffer) arrives backed by
the mapping, with the read-only flag it had. The mapping is private (copy on write): a task that writes to its
argument changes its own copy only, so a retry sees the value as sent. A pickle body that is itself large
(a long `bytes` or `str`, a big list) goes into the segment as well, so it never crosses the socket.

A memfd is anonymous memory: it has no name in /dev/shm, and the kernel frees it when its last descriptor and
mapping are gone. A transfer cut short by SIGKILL of either end leaves nothing behind, and nothing needs a
sweep at the next start.

Fresh memory costs a page fault and a zeroed page per 4 KiB, which is most of a transfer's time, so each side
keeps the segments it sent, once every receiver has unmapped them (they say so with a Released message), for
its next transfers (Recycler): up to RECYCLE_BYTES, dropped when the pool closes. A segment is never reused
after a receiver forked while it was mapped (the child may still read it) or died holding it.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import itertools
import mmap
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .pickling import MAIN, dumps, dumps_out_of_band

OOB_MIN = 64 << 10  # a buffer at least this big travels in the segment, not in the pickle
BODY_MIN = 1 << 20  # a pickle body at least this big travels in the segment too
ALIGN = 64  # each buffer starts on a cache line: NumPy needs at most the alignment of its dtype
WRITE_MAX = 1 << 30  # most bytes one write() is asked for (Linux stops at 2 GiB - 4 KiB)
RECYCLE_SHARE = 8  # keep at most 1/8 of the machine's memory in warm segments ...
RECYCLE_MAX = 2 << 30  # ... and at most 2 GiB

Span = tuple[int, int, bool]  # (offset, length, read-only)
Release = Callable[[int, bool], None]  # (segment id, reusable): a receiver unmapped a segment
_MAP_FAILED = ctypes.c_void_p(-1).value
_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01  # fallocate(2) modes
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_forks = [0]  # how many times this process forked: a mapping older than a fork may live on in the child


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(before=_count_fork)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.fallocate.restype = ctypes.c_int
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    return libc


def _punch(fd: int, offset: int, size: int) -> None:
    """Give back the memory of `size` bytes of memfd `fd` at `offset` (the file keeps its size: a hole)."""
    _libc().fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, offset, size)


def _unmapped(addr: int, size: int, release: Release | None, sid: int, forks: int) -> None:
    _libc().munmap(addr, size)
    if release is not None:
        release(sid, forks == _forks[0])


def _map(
    fd: int, size: int, prot: int, flags: int, release: Release | None = None, sid: int = 0, offset: int = 0
) -> memoryview:
    addr = _libc().mmap(None, size, prot, flags, fd, offset)
    if addr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mapping a {size}-byte segment failed: {os.strerror(err)}")
    import weakref  # (here: a worker that is never sent a segment starts without it)

    region = (ctypes.c_char * size).from_address(addr)
    weakref.finalize(region, _unmapped, addr, size, release, sid, _forks[0])
    return memoryview(region).cast("B")


class Segment:
    """A memfd holding one transfer's buffers, or the part of the sender's store (Recycler.keep) that holds one
    stored value's, from `base` on; known to its sender by `sid`. Its descriptor closes (or goes back to its
    Recycler) when the last reference goes or with close(); a mapping made from it lives on until its last view
    is gone."""

    __slots__ = ("fd", "size", "sid", "recycler", "release", "view", "base")

    def __init__(
        self,
        fd: int,
        size: int,
        sid: int = 0,
        recycler: Recycler | None = None,
        view: memoryview | None = None,
        base: int = 0,
    ) -> None:
        self.fd = fd
        self.size = size
        self.sid = sid
        self.base = base  # where it starts in its memfd (a page boundary)
        self.recycler = recycler  # the sender's: it takes the segment back once no receiver maps it
        self.release: Release | None = None  # the receiver's: tells the sender when the mapping is gone
        self.view = view  # the sender's own mapping of a warm segment, which writes go through

    def write(self, parts: list[memoryview]) -> list[int]:
        """Write `parts` at aligned offsets; the offsets. A new segment is written with pwrite (which allocates
        its pages fastest), a warm one through the sender's mapping (a plain memcpy: no page is allocated)."""
        offsets, at = [], 0
        for m in parts:
            at = -(-at // ALIGN) * ALIGN
            offsets.append(at)
            at += m.nbytes
        for m, start in zip(parts, offsets, strict=True):
            if self.view is not None:
                self.view[start : start + m.nbytes] = m.cast("B") if m.format != "B" or m.ndim != 1 else m
                continue
            done, at = 0, self.base + start
            while done < m.nbytes:
                done += os.pwrite(self.fd, m[done : done + WRITE_MAX], at + done)
        return offsets

    def map(self, writable: bool = True) -> memoryview:
        """The segment mapped into this process: private (copy on write), or read-only. The mapping holds no
        descriptor (Python's mmap keeps one per mapping, which a consumer holding thousands of received arrays
        would run out of); it is unmapped when the last view of it is gone, and the sender is then told."""
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        view = _map(self.fd, self.size, prot, mmap.MAP_PRIVATE, self.release, self.sid, self.base)
        return view if writable else view.toreadonly()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        if self.recycler is not None:
            self.recycler.dropped(self.sid, fd)
        else:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


def _needed(parts: list[memoryview]) -> int:
    at = 0
    for m in parts:
        at = -(-at // ALIGN) * ALIGN + m.nbytes
    return at


class _Given:
    """A segment its Recycler gave out: how many sends each receiver has not yet released."""

    __slots__ = ("fd", "size", "view", "out", "dropped", "tainted", "base")

    def __init__(self, fd: int, size: int, view: memoryview | None, base: int = -1) -> None:
        self.fd, self.size, self.view = fd, size, view
        self.base = base  # a stored value's place in the store (Recycler.keep); -1: a memfd of its own
        self.out: collections.Counter[int] = collections.Counter()  # receiver (peer) -> sends not released
        self.dropped = False  # the sender let go of it
        self.tainted = False  # a receiver forked while mapping it, or died: never reuse it


class Recycler:
    """One side's segments: new ones, and warm ones whose every receiver has let go, for reuse (most-recent
    first, up to `limit` bytes). Events that garbage collection raises (a Segment dropped) are queued and
    taken at the next call, so no lock is taken inside a finalizer.

    Stored values (`keep`: a pool's put) share one memfd, the store, each in pages of its own: a pool holding
    thousands of them holds one descriptor, not one each, so it meets no limit on open files. A value's pages
    go back to the kernel (a hole punched) once its Ref was dropped and every receiver unmapped it; the store's
    descriptor closes with the pool."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = _recycle_limit() if limit is None else limit
        self._lock = threading.Lock()
        self._dropped: collections.deque[tuple[int, int]] = collections.deque()  # appended from finalizers
        self._given: dict[int, _Given] = {}
        # sid -> (fd, size, the sender's mapping once the segment was reused)
        self._free: collections.OrderedDict[int, tuple[int, int, memoryview | None]] = collections.OrderedDict()
        self._ids = itertools.count(1)
        self._store = -1  # the memfd that stored values share (made at the first one)
        self._store_end = 0  # where the next stored value goes in it
        self._kept: set[int] = set()  # the sids of stored values (their descriptor is the store's)
        self.closed = False

    def segment(self, parts: list[memoryview]) -> tuple[Segment, list[int]]:
        """A segment holding `parts` (a warm one that fits, else a new one); their offsets in it."""
        need = max(_needed(parts), 1)
        with self._lock:
            self._settle()
            fits = [(size, sid) for sid, (_, size, _) in self._free.items() if need <= size <= 2 * need + (1 << 20)]
            view: memoryview | None = None
            if fits:
                size, sid = min(fits)
                fd, _, view = self._free.pop(sid)
            else:
                fd = os.memfd_create("migpool", os.MFD_CLOEXEC)
                sid, size = next(self._ids), need
            self._given[sid] = g = _Given(fd, size, view)
        seg = Segment(fd, size, sid, self)  # from here, it comes back (or closes) however the write ends
        if not fits:
            os.ftruncate(fd, size)
        elif view is None:  # reused for the first time: mapped here, its pages in place already
            view = g.view = _map(fd, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | _POPULATE)
        seg.view = view
        return seg, seg.write(parts)

    def keep(self, parts: list[memoryview]) -> tuple[Segment, list[int]]:
        """A segment of the store holding `parts` (a stored value, sent to any number of receivers); their
        offsets in it."""
        need = max(_needed(parts), 1)
        with self._lock:
            self._settle()
            if self._store < 0:
                self._store = os.memfd_create("migpool-store", os.MFD_CLOEXEC)
            base = self._store_end
            self._store_end = base + -(-need // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY
            os.ftruncate(self._store, self._store_end)
            sid = next(self._ids)
            self._given[sid] = _Given(self._store, need, None, base)
            self._kept.add(sid)
            seg = Segment(self._store, need, sid, self, base=base)
        return seg, seg.write(parts)

    def sent(self, sid: int, peer: int) -> None:
        """The segment is on its way to receiver `peer`, which will release it."""
        with self._lock:
            g = self._given.get(sid)
            if g is not None:
                g.out[peer] += 1

    def released(self, items: list[tuple[int, bool]], peer: int) -> None:
        """Receiver `peer` unmapped these segments (reusable: it had not forked since it mapped them)."""
        with self._lock:
            for sid, reusable in items:
                g = self._given.get(sid)
                if g is None or g.out[peer] <= 0:
                    continue
                g.out[peer] -= 1
                g.tainted |= not reusable
            self._settle()

    def peer_gone(self, peer: int) -> None:
        """Receiver `peer` died: what it held is never reused (what it forked may hold it still)."""
        with self._lock:
            for g in self._given.values():
                if g.out.pop(peer, 0):
                    g.tainted = True
            self._settle()

    def dropped(self, sid: int, fd: int) -> None:
        """The sender let go of a segment (from Segment.close or a finalizer: queued, no lock)."""
        if sid in self._kept:  # a stored value: the descriptor is the store's, closed with it
            if not self.closed:
                self._dropped.append((sid, -1))
        elif self.closed:
            os.close(fd)
        else:
            self._dropped.append((sid, fd))

    def tidy(self) -> None:
        """Take back what was dropped since the last call."""
        if self._dropped:
            with self._lock:
                self._settle()

    def _settle(self) -> None:
        """(lock held) Take the dropped segments: reuse those nobody maps, close the tainted, trim the warm."""
        while self._dropped:
            sid, _ = self._dropped.popleft()
            g = self._given.get(sid)
            if g is not None:
                g.dropped = True
        for sid, g in list(self._given.items()):
            if not g.dropped:
                continue
            if g.base >= 0:  # a stored value: its pages go once nobody maps them (a receiver that forked or
                if g.tainted or not +g.out:  # died may map them still: those stay until the store closes)
                    del self._given[sid]
                    self._kept.discard(sid)
                    if not g.tainted:
                        _punch(g.fd, g.base, g.size)
                continue
            if g.tainted:
                del self._given[sid]
                os.close(g.fd)
            elif not +g.out:
                del self._given[sid]
                self._free[sid] = (g.fd, g.size, g.view)
        total = sum(size for _, size, _ in self._free.values())
        while self._free and total > self.limit:
            _, (fd, size, _) = self._free.popitem(last=False)
            os.close(fd)
            total -= size

    def close(self) -> None:
        """Close every warm segment, and from now on each one dropped (the pool is closing)."""
        with self._lock:
            self.closed = True
            self._settle()
            for fd, _, _ in self._free.values():
                os.close(fd)
            self._free.clear()
            for sid, g in list(self._given.items()):
                if g.dropped and g.base < 0:
                    os.close(g.fd)
                    del self._given[sid]
            if self._store >= 0:  # (a mapping of a stored value lives on until its last view is gone)
                os.close(self._store)
                self._store = -1


def _recycle_limit() -> int:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 8 << 30
    return min(RECYCLE_MAX, memory // RECYCLE_SHARE)


class Packed:
    """A pickled value whose large buffers lie in a segment. `body` is the pickle, or None when it lies in the
    segment too, at `spans[-1]`."""

    __slots__ = ("body", "segment", "spans")

    def __init__(self, body: bytes | None, segment: Segment, spans: tuple[Span, ...]) -> None:
        self.body = body
        self.segment = segment
        self.spans = spans

    @property
    def nbytes(self) -> int:
        return self.segment.size + (len(self.body) if self.body is not None else 0)


def pack(obj: Any, recycler: Recycler, keep: bool = False) -> bytes | Packed:
    """`obj` pickled: plain bytes when it is small, else a Packed whose buffers (and large body) were written
    once into a segment (`keep`: into the recycler's store, for a stored value). A pickling that fails part-way
    raises before any segment is taken."""
    found: list[pickle.PickleBuffer] = []
    if "torch" in sys.modules:  # its tensors need the reducers that pickling.dumps adds
        body, found = dumps_out_of_band(obj)
    else:
        try:  # plain pickle, at once (the usual small value)
            body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=found.append)
            if MAIN in body:  # a global of the caller's script, by name: by value instead (pickling.dumps)
                raise pickle.PicklingError("a __main__ object")
        except Exception:  # noqa: BLE001 - cloudpickle's turn (and its error, if it cannot either)
            body, found = dumps_out_of_band(obj)
    if not found and len(body) < BODY_MIN:
        return body
    parts = [b.raw() for b in found]
    if parts and sum(m.nbytes for m in parts) < OOB_MIN:  # small buffers only: they go in the pickle
        body, parts = dumps(obj), []
        if len(body) < BODY_MIN:
            return body
    inline = len(body) < BODY_MIN
    if not inline:
        parts.append(memoryview(body).toreadonly())
    segment, offsets = recycler.keep(parts) if keep else recycler.segment(parts)
    spans = tuple((at, m.nbytes, m.readonly) for at, m in zip(offsets, parts, strict=True))
    return Packed(body if inline else None, segment, spans)


def unpack(data: bytes | Packed, shared: bool = False) -> Any:
    """The value `pack` made. Out-of-band buffers come back as views of the segment's mapping (read-only where
    they were, or everywhere for a `shared` value that many tasks read); the segment's descriptor is closed once
    mapped."""
    if type(data) is not Packed:
        return pickle.loads(data)  # type: ignore[arg-type]
    view = data.segment.map(writable=not shared)
    data.segment.close()
    bufs = [view[at : at + n].toreadonly() if ro or shared else view[at : at + n] for at, n, ro in data.spans]
    if data.body is not None:
        return pickle.loads(data.body, buffers=bufs)
    return pickle.loads(bufs.pop(), buffers=bufs)


class Codec(Protocol):
    """How a pool's values travel: SharedMemoryCodec on this machine, ray_pool.RayCodec through Ray's store."""

    def pack(self, obj: Any) -> Any: ...

    def store(self, obj: Any) -> Any: ...

    def unpack(self, data: Any, shared: bool = False) -> Any: ...

    def released(self, items: list[tuple[int, bool]], peer: int) -> None: ...

    def peer_gone(self, peer: int) -> None: ...

    def tidy(self) -> None: ...

    def close(self) -> None: ...


class SharedMemoryCodec:
    """Values through shared memory on this machine, with this side's Recycler."""

    def __init__(self) -> None:
        self.recycler = Recycler()
        # a task's arguments, its result or a stream's item, for one transfer; a value for `put`, sent to any
        # number of workers (bound here: a pool of tiny tasks calls it twice a task)
        self.pack: Callable[[Any], Any] = functools.partial(pack, recycler=self.recycler)
        self.store: Callable[[Any], Any] = functools.partial(pack, recycler=self.recycler, keep=True)
        self.tidy: Callable[[], None] = self.recycler.tidy  # (bound here: the scheduler calls it twice a task)

    def unpack(self, data: Any, shared: bool = False) -> Any:
        return unpack(data, shared)

    def released(self, items: list[tuple[int, bool]], peer: int) -> None:
        self.recycler.released(items, peer)

    def peer_gone(self, peer: int) -> None:
        self.recycler.peer_gone(peer)

    def close(self) -> None:
        self.recycler.close()
