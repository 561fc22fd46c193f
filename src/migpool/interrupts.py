"""Ctrl-C in the command line: the status it owes, whatever Python was doing when it came.

CPython remembers a `KeyboardInterrupt` that escaped an `exec`/`eval` of source text (dataclasses and
namedtuples build their methods that way at import) and, at exit, kills the process with SIGINT (status -2, no
message) even where the program caught the interrupt and exited 130 itself. An interrupt of a subclass is not
remembered, so the command line raises `Interrupted` for SIGINT from its first line on (`install`). Python 3.11
also wraps an interrupt raised inside a class's `__set_name__` in a RuntimeError: `status` looks through the chain.
"""

from __future__ import annotations

import signal


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C), raised on the main thread as KeyboardInterrupt is."""


def _raise(signum: int, frame: object) -> None:
    raise Interrupted


def install() -> None:
    """Raise `Interrupted` for SIGINT from now on, where Python's own handler is in place (an ignored SIGINT,
    as `nohup` or a shell's background job leaves it, stays ignored)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise)


def status(e: BaseException) -> int | None:
    """128 + the signal when `e` is, or was caused by, an interrupt (a `signum` attribute names another signal
    than SIGINT); None otherwise."""
    seen: set[int] = set()
    found: BaseException | None = e
    while found is not None and id(found) not in seen:
        if isinstance(found, KeyboardInterrupt):
            return 128 + int(getattr(found, "signum", signal.SIGINT))
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None
