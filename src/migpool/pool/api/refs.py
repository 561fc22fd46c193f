"""Values stored once and read by many tasks: `ref = compute.put(value)`.

A Ref travels inside a task's arguments (at any depth), or inside the items of an iterator argument, as its number
only. The pool notes which refs a task's arguments or an item name while it pickles them (`noting`,
`pack_naming`), sends each worker a stored value at most once, before the first task or item there that needs it,
and tells the workers to forget it when the Ref is garbage (or the pool closes). In a worker, `stored` maps the
numbers to the values. Anywhere else (a pool collection's values) a Ref is refused where it is sent.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

_ids = itertools.count(1)
made = [False]  # whether this process made a Ref yet: until then, pickling needs no noting
_noted = threading.local()
_VALUES: dict[int, Any] = {}  # in a worker: the stored values it holds, by number


class Ref:
    """A value stored in the pool by `Compute.put`. Pass it as a task's argument (or inside one) instead of the
    value: each worker receives the value once and keeps it while the Ref lives."""

    __slots__ = ("vid", "owner", "nbytes", "__weakref__")

    def __init__(self, owner: int, nbytes: int) -> None:
        self.vid = next(_ids)
        made[0] = True
        self.owner = owner  # the pool that holds the value
        self.nbytes = nbytes

    def __reduce__(self) -> tuple[Any, ...]:
        found = getattr(_noted, "refs", None)
        if found is not None:
            found.append(self)
        return stored, (self.vid,)

    def __repr__(self) -> str:
        return f"<migpool.Ref {self.vid}: {self.nbytes:,} bytes stored in the pool>"


def noting() -> tuple[list[Ref], list[Ref] | None]:
    """Start noting the refs that pickling names, in this thread: (the list they go to, what to give
    `stop_noting`). A plain pair of calls, not a context manager: the pool pays this on every submit."""
    found: list[Ref] = []
    before = getattr(_noted, "refs", None)
    _noted.refs = found
    return found, before


def stop_noting(before: list[Ref] | None) -> None:
    _noted.refs = before


def pack_naming(pack: Callable[[Any], Any], value: Any) -> tuple[Any, list[Ref]]:
    """`pack(value)`, and the refs it names (none where this process made no Ref)."""
    if not made[0]:
        return pack(value), []
    found, before = noting()
    try:
        return pack(value), found
    finally:
        stop_noting(before)


def stored(vid: int) -> Any:
    """The value stored under `vid`, in the worker that unpickles a task's arguments."""
    try:
        return _VALUES[vid]
    except KeyError:
        raise LookupError(
            f"stored value {vid} is not in this process: a migpool.Ref is resolved only inside a task of the pool "
            "that made it (with compute.put), while the Ref is alive, from the task's arguments or an iterator "
            "argument's items"
        ) from None


def keep(vid: int, value: Any) -> None:
    _VALUES[vid] = value


def forget(vid: int) -> None:
    _VALUES.pop(vid, None)


def held() -> int:
    """How many stored values this process holds."""
    return len(_VALUES)
