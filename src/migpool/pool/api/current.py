"""The innermost open pool, and `sky`, the name that stands for it: `task >> sky` (and `task >> migpool`, the
module) run on the innermost `Compute` whose `with` block is open in this process, as in the reference system."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

_open: list[Any] = []  # the pools whose `with` blocks are open, innermost last
_lock = threading.Lock()


@contextlib.contextmanager
def entered(pool: Any) -> Iterator[None]:
    """While this block runs, `pool` is the innermost open pool (Compute enters it with its own block)."""
    with _lock:
        _open.append(pool)
    try:
        yield
    finally:
        with _lock:
            for i in range(len(_open) - 1, -1, -1):
                if _open[i] is pool:
                    del _open[i]
                    break


def innermost() -> Any:
    """The innermost open pool; RuntimeError when none is open."""
    with _lock:
        if _open:
            return _open[-1]
    raise RuntimeError(
        "`sky` stands for the innermost open pool, and none is open: send the task inside a "
        "`with migpool.Compute(...) as compute:` block (or send it to that compute)"
    )


def resolve(target: Any) -> Any:
    """The pool a task is sent to: `sky` and the migpool module stand for the innermost open one."""
    if isinstance(target, Innermost) or (isinstance(target, ModuleType) and target.__name__ == "migpool"):
        return innermost()
    return target


class Innermost:
    """`sky`: the innermost open pool, wherever a pool is expected (`task >> sky`, `sky.map(...)`)."""

    def __repr__(self) -> str:
        return "sky"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(innermost(), name)


sky = Innermost()
