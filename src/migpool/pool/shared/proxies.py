"""Pool-wide collections, as the reference system names them: `migpool.dict(name)`, `set`, `counter`, `queue`,
`barrier(name, n)` and `lock(name)`, from any task of the pool (and `compute.dict(name)` … on the pool itself).

Each is a small proxy; its operations go to the pool's one `SharedState` (shared_state.py) through a `Transport`:
in the pool's own process directly, from a worker process over its channel to the parent, from a Ray actor to a
named Ray actor of the pool. Which transport a call takes is found where it runs (`transport()`).

Every operation is answered by the one place that holds the state, so all are atomic and every read sees every
write before it (the reference's consistency="strong"; "eventual" is accepted and served the same).

A value put in a collection travels pickled through the one place that holds the state; a migpool.Ref inside it
is refused where it is put (`pack`): a Ref travels only as a task's argument or in an iterator argument's items.
"""

from __future__ import annotations

import itertools
import os
import pickle
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

from ..api import refs
from ..wire.pickling import dumps
from .state import ERRORS, TIMED_OUT, Caller, Refusal, SharedState, Waiter

CONSISTENCIES = (None, "strong", "eventual")


class Transport(Protocol):
    def call(self, kind: str, name: str, op: str, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        """The answer to `op` (raising the error it was refused with), or TIMED_OUT after `timeout` seconds."""
        ...


def refused(value: Any) -> BaseException:
    """The exception a Refusal stands for."""
    if type(value) is Refusal:
        return ERRORS.get(value.kind, RuntimeError)(value.message)
    return RuntimeError(f"a pool collection's call failed: {value!r}")


class LocalTransport:
    """Calls on a SharedState in this process (the pool's parent, or a thread worker's pool)."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self._ids = itertools.count()

    def call(self, kind: str, name: str, op: str, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        holder = Caller(os.getpid(), threading.get_ident())
        cid = next(self._ids)
        box: list[tuple[bool, Any]] = []
        done = threading.Event()

        def answer(ok: bool, value: Any) -> None:
            box.append((ok, value))
            done.set()

        self.state.call(Waiter(holder, cid, answer), kind, name, op, args)
        if not box and not done.wait(timeout):
            self.state.withdraw(holder, cid)  # answered now with TIMED_OUT, unless it was answered meanwhile
            done.wait()
        ok, value = box[0]
        if not ok:
            raise refused(value)
        return value


# --- where a call goes ---
_process: Transport | None = None  # a worker process's (its channel to the parent, or a Ray actor's)
_thread = threading.local()  # a thread worker's (its pool's)
_pools: list[Transport] = []  # the pools this process opened, newest last
_pools_lock = threading.Lock()


def install(t: Transport | None) -> None:
    """This worker process's transport (set by the worker before it runs tasks)."""
    global _process
    _process = t


def install_thread(t: Transport | None) -> None:
    _thread.transport = t


def opened(t: Transport) -> None:
    """A pool of this process opened: calls outside tasks go to it (the newest one open)."""
    with _pools_lock:
        _pools.append(t)


def closed(t: Transport) -> None:
    with _pools_lock:
        if t in _pools:
            _pools.remove(t)


def transport() -> Transport:
    t = getattr(_thread, "transport", None) or _process
    if t is not None:
        return t
    with _pools_lock:
        if _pools:
            return _pools[-1]
    raise RuntimeError(
        "no pool is running here: call migpool.dict(...) (and the other collections) inside a task, "
        "or on the pool itself: compute.dict(...) inside `with Compute(...) as compute:`"
    )


async def _off(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking operation on a thread, for the `_async` forms (asyncio is imported only by those who use
    them: a worker process starts without it)."""
    import asyncio

    return await asyncio.to_thread(fn, *args)


def _load(data: bytes) -> Any:
    return pickle.loads(data)


def pack(value: Any, where: str) -> bytes:
    """`value` pickled for a collection; TypeError, in one line, where it holds a migpool.Ref (a collection's
    reader may be any process of the pool, which holds no stored value outside a task that names it)."""
    if not refs.made[0]:  # (no Ref was made in this process: nothing to look for)
        return dumps(value)
    found, before = refs.noting()
    try:
        data = dumps(value)
    finally:
        refs.stop_noting(before)
    if found:
        raise TypeError(
            f"{found[0]!r} cannot travel through {where}: pass a Ref as a task's argument (or in an iterator "
            "argument's items), or put the value itself"
        )
    return data


def check_consistency(consistency: Any) -> None:
    if consistency not in CONSISTENCIES:
        raise ValueError(f"consistency must be 'strong' or 'eventual' (both are served as strong), not {consistency!r}")


class _Proxy:
    kind = ""
    __slots__ = ("name", "_t")

    def __init__(self, name: str, t: Transport | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a pool collection's name is a non-empty string, not {name!r}")
        self.name = name
        self._t = t

    def _call(self, op: str, *args: Any, timeout: float | None = None) -> Any:
        t = self._t or transport()  # resolved at each call: a proxy made in the parent works in a task too
        return t.call(self.kind, self.name, op, args, timeout)

    def __reduce__(self) -> Any:  # a proxy sent to a task resolves its pool there
        return (type(self), (self.name,))

    def __repr__(self) -> str:
        return f"<migpool {self.kind} {self.name!r}>"


class Dict(_Proxy):
    """A dict that every task of the pool shares: `d[k]`, `d[k] = v`, `del d[k]`, `k in d`, `get`, `update`,
    `pop`, `len`, `keys`, `items`, `clear`. Keys are plain values (hashable); values travel pickled."""

    kind = "dict"
    __slots__ = ()

    def __getitem__(self, key: Hashable) -> Any:
        found, data = self._call("get", key)
        if not found:
            raise KeyError(key)
        return _load(data)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self._call("put", key, pack(value, repr(self)))

    def __delitem__(self, key: Hashable) -> None:
        self._call("delete", key)

    def __contains__(self, key: Hashable) -> bool:
        return bool(self._call("contains", key))

    def __len__(self) -> int:
        return int(self._call("len"))

    def get(self, key: Hashable, default: Any = None) -> Any:
        found, data = self._call("get", key)
        return _load(data) if found else default

    def update(self, items: Mapping[Hashable, Any] | Iterable[tuple[Hashable, Any]] = (), **kw: Any) -> None:
        pairs = list(items.items() if isinstance(items, Mapping) else items) + list(kw.items())
        self._call("update", [(k, pack(v, repr(self))) for k, v in pairs])

    def pop(self, key: Hashable, default: Any = None) -> Any:
        found, data = self._call("pop", key)
        return _load(data) if found else default

    def keys(self) -> list[Hashable]:
        return list(self._call("keys"))

    def items(self) -> list[tuple[Hashable, Any]]:
        return [(k, self.get(k)) for k in self.keys()]

    def clear(self) -> None:
        self._call("clear")

    async def get_async(self, key: Hashable, default: Any = None) -> Any:
        return await _off(self.get, key, default)

    async def set_async(self, key: Hashable, value: Any) -> None:
        await _off(self.__setitem__, key, value)

    async def update_async(self, items: Mapping[Hashable, Any]) -> None:
        await _off(self.update, items)

    async def pop_async(self, key: Hashable, default: Any = None) -> Any:
        return await _off(self.pop, key, default)


class Set(_Proxy):
    """A set that every task of the pool shares: `v in s`, `len(s)`, `add` (True if `v` was new: an atomic
    test-and-set), `discard`, `members`."""

    kind = "set"
    __slots__ = ()

    def __contains__(self, value: Hashable) -> bool:
        return bool(self._call("contains", value))

    def __len__(self) -> int:
        return int(self._call("len"))

    def add(self, value: Hashable) -> bool:
        return bool(self._call("add", value))

    def discard(self, value: Hashable) -> None:
        self._call("discard", value)

    def members(self) -> list[Hashable]:
        return list(self._call("members"))

    async def add_async(self, value: Hashable) -> bool:
        return await _off(self.add, value)

    async def discard_async(self, value: Hashable) -> None:
        await _off(self.discard, value)

    async def contains_async(self, value: Hashable) -> bool:
        return await _off(self.__contains__, value)


class Counter(_Proxy):
    """An integer that every task of the pool shares; `increment`/`decrement` are atomic and return the new value."""

    kind = "counter"
    __slots__ = ()

    @property
    def value(self) -> int:
        return int(self._call("get"))

    def increment(self, n: int = 1) -> int:
        return int(self._call("add", n))

    def decrement(self, n: int = 1) -> int:
        return int(self._call("add", -n))

    def reset(self, value: int = 0) -> None:
        self._call("reset", value)

    def __int__(self) -> int:
        return self.value

    async def value_async(self) -> int:
        return await _off(lambda: self.value)

    async def increment_async(self, n: int = 1) -> int:
        return await _off(self.increment, n)

    async def decrement_async(self, n: int = 1) -> int:
        return await _off(self.decrement, n)

    async def reset_async(self, value: int = 0) -> None:
        await _off(self.reset, value)


class Queue(_Proxy):
    """A first-in first-out queue that every task of the pool shares. `get(timeout=None)` waits for an item (for
    ever, or up to `timeout` seconds, then returns None); every item goes to exactly one `get`."""

    kind = "queue"
    __slots__ = ()

    def put(self, value: Any) -> None:
        self._call("put", pack(value, repr(self)))

    def get(self, timeout: float | None = None) -> Any:
        if timeout is not None and timeout <= 0:
            data = self._call("get", False)
        else:
            data = self._call("get", True, timeout=timeout)
        return None if data is None or data == TIMED_OUT else _load(data)

    def empty(self) -> bool:
        return len(self) == 0

    def __len__(self) -> int:
        return int(self._call("len"))

    async def put_async(self, value: Any) -> None:
        await _off(self.put, value)

    async def get_async(self, timeout: float | None = None) -> Any:
        return await _off(self.get, timeout)


class Barrier(_Proxy):
    """`wait()` returns once `n` parties of the pool have called it (then the barrier serves the next round).
    A party whose process dies while it waits breaks the barrier, as an aborted party breaks a threading.Barrier:
    the parties waiting and every later `wait` raise BrokenBarrierError until `reset()`."""

    kind = "barrier"
    __slots__ = ("n",)

    def __init__(self, name: str, n: int, t: Transport | None = None) -> None:
        super().__init__(name, t)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"barrier {name!r} needs n >= 1 parties, not {n!r}")
        self.n = n

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the others; this party's arrival index (0 … n-1). TimeoutError after `timeout` seconds (this
        party is withdrawn; the barrier stays whole); BrokenBarrierError if a party died."""
        got = self._call("wait", self.n, timeout=timeout)
        if got == TIMED_OUT:
            raise TimeoutError(f"barrier {self.name!r}: not all {self.n} parties arrived within {timeout}s")
        return int(got)

    def reset(self) -> None:
        """Make a broken barrier whole again. A barrier that is not broken is left as it is (the reference's
        reset does nothing): it starts each round again by itself, and the parties waiting keep waiting."""
        self._call("reset")

    async def wait_async(self, timeout: float | None = None) -> int:
        return await _off(self.wait, timeout)

    def __reduce__(self) -> Any:
        return (Barrier, (self.name, self.n))


class Lock(_Proxy):
    """A lock for the whole pool, held by one thread of one task at a time; `with lock:` or `acquire`/`release`.
    `acquire` waits up to the lock's `timeout` (default 30 s) and raises TimeoutError after it. A lock whose
    holder's process dies is released."""

    kind = "lock"
    __slots__ = ("timeout",)

    def __init__(self, name: str, timeout: float = 30, t: Transport | None = None) -> None:
        super().__init__(name, t)
        self.timeout = timeout

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if not blocking:
            return bool(self._call("acquire", False))
        wait = self.timeout if timeout is None else timeout
        got = self._call("acquire", True, timeout=None if wait is None or wait < 0 else wait)
        if got == TIMED_OUT:
            raise TimeoutError(f"lock {self.name!r} was not acquired within {wait}s")
        return True

    def release(self) -> None:
        self._call("release")

    def locked(self) -> bool:
        return bool(self._call("locked"))

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def acquire_async(self) -> bool:
        return await _off(self.acquire)

    async def release_async(self) -> None:
        await _off(self.release)

    async def __aenter__(self) -> Lock:
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release_async()

    def __reduce__(self) -> Any:
        return (Lock, (self.name, self.timeout))


# --- the reference's module-level names (exported as migpool.dict, migpool.set, …) ---
def shared_dict(name: str, *, consistency: str | None = None) -> Dict:
    """The pool's dict `name` (made on first use)."""
    check_consistency(consistency)
    return Dict(name)


def shared_set(name: str, *, consistency: str | None = None) -> Set:
    check_consistency(consistency)
    return Set(name)


def counter(name: str, *, consistency: str | None = None) -> Counter:
    check_consistency(consistency)
    return Counter(name)


def queue(name: str) -> Queue:
    return Queue(name)


def barrier(name: str, n: int) -> Barrier:
    return Barrier(name, n)


def lock(name: str, timeout: float = 30) -> Lock:
    return Lock(name, timeout)


PUBLIC = {"dict": "shared_dict", "set": "shared_set", "counter": "counter", "queue": "queue"}
PUBLIC.update(barrier="barrier", lock="lock")
