"""The state behind the pool-wide collections (`migpool.dict`, `set`, `counter`, `queue`, `barrier`, `lock`): one
`SharedState` per pool, kept by whoever serves them (the pool's parent process, or a Ray actor on a Ray pool).

It starts no thread and reads no clock. A call is answered at once, or (a queue's `get` on an empty queue, a
barrier's `wait` before the last arrival, a `lock`'s `acquire` while another holds it) later, when another call
makes its answer ready: the caller's `Waiter` is then answered from that other call. A waiter that gives up (its
timeout) is withdrawn; one whose process died is dropped with `gone`, and the locks it held are released.

Nothing is handed to the dead. A waiter says whether its process is alive (`Waiter.alive`, asked of the kernel by
whoever serves it): a queue item, a lock or a barrier's release goes only to a live waiter, and a waiter found dead
before `gone` comes is dropped then. An item whose answer did not reach its process after all comes back with
`give_back`. A barrier with a dead party breaks, as threading.Barrier does when a party is aborted: its waiting
parties and every later `wait` get BrokenBarrierError until `reset`.

Values (a dict's values, a queue's items) are kept as the caller's pickled bytes and handed back as they came:
this process never needs to import the classes they hold. Keys and set members are plain values.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from threading import BrokenBarrierError
from typing import Any, NamedTuple

KINDS = ("dict", "set", "counter", "queue", "barrier", "lock")
TIMED_OUT = "migpool-timed-out"  # the answer to a call withdrawn before it was answered


class Caller(NamedTuple):
    """Who calls: a process and one of its threads (a lock is held by a thread, as threading.Lock is)."""

    pid: int
    thread: int


def _always() -> bool:
    return True


class Waiter:
    """A call that waits for its answer; `answer(ok, value)` is called once, from whichever thread makes it.
    `alive()` says whether the caller's process is still there to take an answer (None: it is this process)."""

    __slots__ = ("holder", "cid", "answer", "alive")

    def __init__(
        self,
        holder: Caller,
        cid: int,
        answer: Callable[[bool, Any], None],
        alive: Callable[[], bool] | None = None,
    ) -> None:
        self.holder = holder
        self.cid = cid
        self.answer = answer
        self.alive = alive or _always


class Refusal(NamedTuple):
    """An error for the caller to raise: its type's name (one of ERRORS) and its message."""

    kind: str
    message: str


ERRORS: dict[str, type[Exception]] = {
    "KeyError": KeyError,
    "ValueError": ValueError,
    "RuntimeError": RuntimeError,
    "TypeError": TypeError,
    "BrokenBarrierError": BrokenBarrierError,
}
WAIT = object()  # what an operation returns when its caller must wait


class _Barrier:
    __slots__ = ("n", "arrived", "broken")

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrived: list[Waiter] = []
        self.broken = ""  # why it broke (a party died), until reset


class _Lock:
    __slots__ = ("holder", "waiting")

    def __init__(self) -> None:
        self.holder: Caller | None = None
        self.waiting: collections.deque[Waiter] = collections.deque()


class SharedState:
    """Every collection of one pool, by kind and name; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dicts: dict[str, dict[Hashable, bytes]] = {}
        self.sets: dict[str, set[Hashable]] = {}
        self.counters: dict[str, int] = {}
        self.queues: dict[str, collections.deque[bytes]] = {}
        self.getters: dict[str, collections.deque[Waiter]] = {}
        self.barriers: dict[str, _Barrier] = {}
        self.locks: dict[str, _Lock] = {}

    def call(self, waiter: Waiter, kind: str, name: str, op: str, args: tuple[Any, ...]) -> None:
        """Carry out `op` on collection `name` of `kind`, answering `waiter` now or when its answer is ready."""
        handler = getattr(self, f"_{kind}_{op}", None) if kind in KINDS else None
        if handler is None:
            waiter.answer(False, Refusal("ValueError", f"no operation {op!r} on a pool {kind}"))
            return
        later: list[tuple[Waiter, bool, Any]] = []
        with self._lock:
            try:
                result = handler(name, waiter, later, *args)
            except TypeError as e:  # an unhashable key or member, or a wrong argument count
                result = Refusal("TypeError", str(e))
        for w, ok, value in later:  # answered outside the lock: an answer may write to a pipe
            w.answer(ok, value)
        if result is WAIT:
            return
        if type(result) is Refusal:
            waiter.answer(False, result)
        else:
            waiter.answer(True, result)

    def withdraw(self, holder: Caller, cid: int) -> bool:
        """Give up the waiting call `cid` of `holder`: it is answered with TIMED_OUT. False if it was answered
        already (that answer stands: the item it got, the lock it holds, is the caller's)."""
        with self._lock:
            dropped = self._drop(lambda w: w.holder == holder and w.cid == cid)
        for w in dropped:
            w.answer(True, TIMED_OUT)
        return bool(dropped)

    def gone(self, pid: int) -> None:
        """Process `pid` died: its waiting calls are dropped, the locks its threads held are released and the
        barriers it waited at break."""
        later: list[tuple[Waiter, bool, Any]] = []
        with self._lock:
            for name, b in self.barriers.items():
                dead = [w for w in b.arrived if w.holder.pid == pid]
                if dead:
                    self._break(name, b, dead, later)
            self._drop(lambda w: w.holder.pid == pid)
            for lock in self.locks.values():
                if lock.holder is not None and lock.holder.pid == pid:
                    self._hand_on(lock, later)
        for w, ok, value in later:
            w.answer(ok, value)

    def undo_of(self, kind: str, name: str, op: str, value: Any) -> Callable[[], None] | None:
        """What takes back answer `value` to `op` should it never reach its caller: a queue item goes back
        (give_back); None for an answer that hands nothing over."""
        if kind == "queue" and op == "get" and type(value) is bytes:
            return lambda: self.give_back(name, value)
        return None

    def give_back(self, name: str, data: bytes) -> None:
        """An item of queue `name` whose answer never reached the process that took it (that process died
        first): it goes back to the front of the queue, or to the first live get that waits."""
        later: list[tuple[Waiter, bool, Any]] = []
        with self._lock:
            w = self._live_getter(name)
            if w is None:
                self.queues.setdefault(name, collections.deque()).appendleft(data)
            else:
                later.append((w, True, data))
        for w, ok, value in later:
            w.answer(ok, value)

    def _drop(self, match: Callable[[Waiter], bool]) -> list[Waiter]:
        """Remove the waiting calls that `match`; those removed."""
        found: list[Waiter] = []
        for waiting in (*self.getters.values(), *(lock.waiting for lock in self.locks.values())):
            for w in [w for w in waiting if match(w)]:
                waiting.remove(w)
                found.append(w)
        for barrier in self.barriers.values():
            found += [w for w in barrier.arrived if match(w)]
            barrier.arrived = [w for w in barrier.arrived if not match(w)]
        return found

    # --- dict: keys are plain values; values stay pickled ---
    def _dict(self, name: str) -> dict[Hashable, bytes]:
        return self.dicts.setdefault(name, {})

    def _dict_get(self, name: str, w: Waiter, later: list[Any], key: Hashable) -> tuple[bool, bytes | None]:
        d = self._dict(name)
        return (True, d[key]) if key in d else (False, None)

    def _dict_put(self, name: str, w: Waiter, later: list[Any], key: Hashable, data: bytes) -> None:
        self._dict(name)[key] = data

    def _dict_update(self, name: str, w: Waiter, later: list[Any], items: list[tuple[Hashable, bytes]]) -> None:
        self._dict(name).update(items)

    def _dict_delete(self, name: str, w: Waiter, later: list[Any], key: Hashable) -> Refusal | None:
        d = self._dict(name)
        if key not in d:
            return Refusal("KeyError", repr(key))
        del d[key]
        return None

    def _dict_pop(self, name: str, w: Waiter, later: list[Any], key: Hashable) -> tuple[bool, bytes | None]:
        d = self._dict(name)
        return (True, d.pop(key)) if key in d else (False, None)

    def _dict_contains(self, name: str, w: Waiter, later: list[Any], key: Hashable) -> bool:
        return key in self._dict(name)

    def _dict_len(self, name: str, w: Waiter, later: list[Any]) -> int:
        return len(self._dict(name))

    def _dict_keys(self, name: str, w: Waiter, later: list[Any]) -> list[Hashable]:
        return list(self._dict(name))

    def _dict_clear(self, name: str, w: Waiter, later: list[Any]) -> None:
        self._dict(name).clear()

    # --- set ---
    def _set(self, name: str) -> set[Hashable]:
        return self.sets.setdefault(name, set())

    def _set_add(self, name: str, w: Waiter, later: list[Any], value: Hashable) -> bool:
        """Add; True if it was not there (so that `add` can serve as an atomic test-and-set)."""
        s = self._set(name)
        new = value not in s
        s.add(value)
        return new

    def _set_discard(self, name: str, w: Waiter, later: list[Any], value: Hashable) -> None:
        self._set(name).discard(value)

    def _set_contains(self, name: str, w: Waiter, later: list[Any], value: Hashable) -> bool:
        return value in self._set(name)

    def _set_len(self, name: str, w: Waiter, later: list[Any]) -> int:
        return len(self._set(name))

    def _set_members(self, name: str, w: Waiter, later: list[Any]) -> list[Hashable]:
        return list(self._set(name))

    # --- counter ---
    def _counter_get(self, name: str, w: Waiter, later: list[Any]) -> int:
        return self.counters.get(name, 0)

    def _counter_add(self, name: str, w: Waiter, later: list[Any], n: int) -> int | Refusal:
        if not isinstance(n, int):
            return Refusal("TypeError", f"a counter counts by whole numbers, not {type(n).__name__}")
        self.counters[name] = value = self.counters.get(name, 0) + n
        return value

    def _counter_reset(self, name: str, w: Waiter, later: list[Any], value: int) -> int | Refusal:
        if not isinstance(value, int):
            return Refusal("TypeError", f"a counter holds a whole number, not {type(value).__name__}")
        self.counters[name] = value
        return value

    # --- queue: first in, first out; a get on an empty queue waits for the next put ---
    def _queue_put(self, name: str, w: Waiter, later: list[Any], data: bytes) -> None:
        getter = self._live_getter(name)
        if getter is not None:
            later.append((getter, True, data))
            return
        self.queues.setdefault(name, collections.deque()).append(data)

    def _live_getter(self, name: str) -> Waiter | None:
        """The first waiting get of queue `name` whose process is alive; the dead ones before it are dropped."""
        getters = self.getters.get(name)
        while getters:
            w = getters.popleft()
            if w.alive():
                return w
        return None

    def _queue_get(self, name: str, w: Waiter, later: list[Any], block: bool) -> Any:
        items = self.queues.get(name)
        if items:
            return items.popleft()
        if not block:
            return None
        self.getters.setdefault(name, collections.deque()).append(w)
        return WAIT

    def _queue_len(self, name: str, w: Waiter, later: list[Any]) -> int:
        return len(self.queues.get(name, ()))

    # --- barrier: the n-th arrival releases all n; then it starts again, for the next round ---
    def _barrier_wait(self, name: str, w: Waiter, later: list[Any], n: int) -> Any:
        if not isinstance(n, int) or n < 1:
            return Refusal("ValueError", f"a barrier needs n >= 1 parties, not {n!r}")
        b = self.barriers.get(name)
        if b is not None and b.broken:
            return Refusal("BrokenBarrierError", b.broken)
        if b is None or not b.arrived:
            b = self.barriers[name] = _Barrier(n)
        elif b.n != n:
            return Refusal(
                "ValueError",
                f"barrier {name!r} is waiting for {b.n} parties and was now asked for {n}: give every party the same n",
            )
        b.arrived.append(w)
        if len(b.arrived) < n:
            return WAIT
        dead = [x for x in b.arrived if not x.alive()]  # (a party's process may have died before its gone())
        if dead:
            b.arrived.remove(w)  # (answered by the return)
            self._break(name, b, dead, later)
            return Refusal("BrokenBarrierError", b.broken)
        arrived, b.arrived = b.arrived, []
        later.extend((x, True, i) for i, x in enumerate(arrived) if x is not w)
        return n - 1  # (like threading.Barrier: each party gets its arrival index)

    def _barrier_reset(self, name: str, w: Waiter, later: list[Any]) -> None:
        """Make a broken barrier whole again (a whole one is left as it is: its waiting parties keep waiting)."""
        b = self.barriers.get(name)
        if b is not None and b.broken:
            del self.barriers[name]

    def _break(self, name: str, b: _Barrier, dead: list[Waiter], later: list[Any]) -> None:
        """A party of barrier `name` died while it waited: the others, now and later, get BrokenBarrierError."""
        pids = ", ".join(str(p) for p in sorted({x.holder.pid for x in dead}))
        b.broken = (
            f"barrier {name!r} is broken: the process of a party that waited at it died (process {pids}); "
            "call reset() to use it again"
        )
        refusal = Refusal("BrokenBarrierError", b.broken)
        later.extend((x, False, refusal) for x in b.arrived if x not in dead and x.alive())
        b.arrived = []

    # --- lock: held by one thread of one process; a waiting acquire gets it in turn ---
    def _lock_acquire(self, name: str, w: Waiter, later: list[Any], block: bool) -> Any:
        lock = self.locks.setdefault(name, _Lock())
        if lock.holder is None:
            lock.holder = w.holder
            return True
        if lock.holder == w.holder:
            return Refusal("RuntimeError", f"lock {name!r} is held by this thread already (it is not reentrant)")
        if not block:
            return False
        lock.waiting.append(w)
        return WAIT

    def _lock_release(self, name: str, w: Waiter, later: list[Any]) -> Refusal | None:
        lock = self.locks.get(name)
        if lock is None or lock.holder is None:
            return Refusal("RuntimeError", f"release of lock {name!r}, which nobody holds")
        if lock.holder != w.holder:
            return Refusal("RuntimeError", f"release of lock {name!r} by a thread that does not hold it")
        self._hand_on(lock, later)
        return None

    def _lock_locked(self, name: str, w: Waiter, later: list[Any]) -> bool:
        lock = self.locks.get(name)
        return lock is not None and lock.holder is not None

    def _hand_on(self, lock: _Lock, later: list[Any]) -> None:
        """The lock goes to the first waiting acquire whose process is alive (a dead one is dropped)."""
        lock.holder = None
        while lock.waiting:
            nxt = lock.waiting.popleft()
            if nxt.alive():
                lock.holder = nxt.holder
                later.append((nxt, True, True))
                return
