"""Retry policies and what they are told, with the reference system's names (Skyward 0.12): `Retry`, `Lost`.

A retry policy is a function `(reason, attempt) -> bool`: `reason` is the exception the task raised (as it comes
back to the caller) or a `Lost` (its worker died under it), `attempt` the attempt that just failed, counting from
1. True runs the task again. `Retry(...)` builds a common one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Literal

from ...errors import QueueTimeoutError, WorkerLostError, task_failed

CEILING = 10  # no task runs more than this many times, whatever its policy says (as in the reference)
log = logging.getLogger("migpool.pool")

LostCause = Literal["never_started", "process_died", "worker_restarted", "node_gone", "unknown"]


@dataclass(frozen=True)
class Lost:
    """Why an attempt's outcome was lost: its worker process died while running it (`process_died`)."""

    cause: LostCause = "unknown"
    node_id: str | None = None


Policy = Callable[[Exception | Lost, int], bool]


@dataclass(frozen=True)
class Retry:
    """A retry policy: run a failed task again, up to `attempts` runs in all, when it raised one of `on` (an
    exception class or a tuple of them), and when its worker was lost if `lost`.

    In the reference system `Retry` is only the type of such a function and cannot be called; here it is also a
    ready-made one, and any plain function `(reason, attempt) -> bool` serves as well."""

    attempts: int = 2
    on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    lost: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or not 1 <= self.attempts <= CEILING:
            raise ValueError(f"Retry(attempts=) is the number of runs in all, 1 to {CEILING}; got {self.attempts!r}")

    def __call__(self, reason: Exception | Lost, attempt: int) -> bool:
        if attempt >= self.attempts:
            return False
        return self.lost if isinstance(reason, Lost) else isinstance(reason, self.on)


def again(policy: Policy | None, reason: Exception | Lost, attempt: int) -> bool:
    """Whether the policy runs the task once more after its attempt `attempt` failed with `reason`: never past
    CEILING attempts, and a policy that raises says no (and is logged)."""
    if policy is None or attempt >= CEILING:
        return False
    try:
        return bool(policy(reason, attempt))
    except Exception as e:  # noqa: BLE001 - a broken policy means no retry, as in the reference
        log.warning("the retry policy %r raised %r: the task is not retried", policy, e)
        return False


def retrying(submit: Callable[[], Future[Any]], policy: Policy | None) -> Future[Any]:
    """The future of a task sent by `submit()`, sent again each time an attempt fails and `policy` says so (a
    worker lost under it is told as Lost("process_died")). The caller's future ends once: with the first result,
    or the last attempt's exception. Cancelling it cancels the attempt at hand."""
    first = submit()
    if policy is None:
        return first
    outer: Future[Any] = Future()
    at = [first]
    attempt = [1]

    def ended(fut: Future[Any]) -> None:
        if outer.done():
            return
        if fut.cancelled():
            outer.cancel()
            return
        e = fut.exception()
        if e is None:
            with contextlib.suppress(InvalidStateError):
                outer.set_result(fut.result())
            return
        lost = isinstance(e, WorkerLostError)
        reason: Any = Lost("process_died") if lost else e
        final = isinstance(e, (QueueTimeoutError, CancelledError))  # (timed out in the queue; the pool closed)
        if isinstance(e, Exception) and not final and again(policy, reason, attempt[0]):
            attempt[0] += 1
            try:
                at[0] = nxt = submit()
            except Exception as refused:  # noqa: BLE001 - the pool closed meanwhile: the caller gets why
                with contextlib.suppress(InvalidStateError):
                    outer.set_exception(refused)
                return
            nxt.add_done_callback(ended)
            if outer.cancelled():  # cancelled as this attempt was sent: the callback below saw the one before
                nxt.cancel()
            return
        with contextlib.suppress(InvalidStateError):
            outer.set_exception(e)

    outer.add_done_callback(lambda f: at[0].cancel() if f.cancelled() else None)
    first.add_done_callback(ended)
    return outer


def on_threads(threads: Executor, task: Any) -> Future[Any]:
    """A task sent to a pool of threads of this process: with its retry policy, and failing unrun with
    QueueTimeoutError when no thread took it up within its queue_timeout (told when a thread takes it up)."""
    deadline = time.monotonic() + task.queue_timeout if task.queue_timeout is not None else None
    call = functools.partial(on_thread, deadline, task.queue_timeout, task.fn)
    return retrying(lambda: threads.submit(call, *task.args, **task.kwargs), task.retry)


def on_thread(deadline: float | None, waited: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn called on a thread of the pool: unless its queue_timeout passed; its exception also a TaskFailedError."""
    if deadline is not None and time.monotonic() > deadline:
        raise late(waited)
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # the caller gets it, as a TaskFailedError too
        failed = task_failed(e)
        if failed is e:
            raise
        raise failed from e.__cause__


def late(waited: float) -> QueueTimeoutError:
    """The error of a task that no worker started within its queue_timeout."""
    return QueueTimeoutError(
        f"waited more than {waited:g}s to start (its queue_timeout) and never ran: every worker was busy; raise "
        "queue_timeout, or send fewer tasks at once",
        details={"timeout": "queue"},
    )
