"""Iterator arguments, read on threads of their own: the user's iterator is user code, which may block or take its
time, so it never runs on the pool's reader threads (a blocked reader would stall its worker's timeouts, its
answers and the pool's close).

Each job with iterator arguments gets one feeding thread, started at the task's first request for items and
stopped when the job's future ends. Its owner (the scheduler's `feeders`) joins it; one still blocked in the
user's iterator then is left behind, and said so (a thread cannot be stopped from outside).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from ..wire.messages import Feed
from .jobs import Job
from .threads import Threads

log = logging.getLogger("migpool.pool")
Read = Callable[[Job, int, int, Callable[[int], None] | None], list[Feed]]
Send = Callable[[list[Feed]], None]
Request = tuple[int, int, Send, Callable[[int], None] | None]


class Feeder:
    """One job's feeding thread: each request (`ask`) reads up to `n` items of one of its iterator arguments
    and hands them to `send` (the worker's writer queue, or the Ray actor)."""

    __slots__ = ("_q",)

    def __init__(self, job: Job, read: Read, threads: Threads) -> None:
        self._q: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        threads.start(f"migpool-feed-{job.id}", self._run, job, read)
        job.future.add_done_callback(lambda _: self.stop())  # (at once if it ended already)

    def ask(self, sid: int, n: int, send: Send, store: Callable[[int], None] | None) -> None:
        self._q.put((sid, n, send, store))

    def stop(self) -> None:
        self._q.put(None)

    def _run(self, job: Job, read: Read) -> None:
        while True:
            req = self._q.get()
            if req is None or job.future.done():
                return
            sid, n, send, store = req
            feeds = read(job, sid, n, store)
            if feeds and not job.future.done():
                try:
                    send(feeds)
                except Exception:  # noqa: BLE001 - its worker is gone (a Ray actor): its reader says so
                    log.debug("migpool: the input of job %s found its worker gone", job.id)


def feed(job: Job, read: Read, threads: Threads, sid: int, n: int, send: Send, store: Any = None) -> None:
    """Have `job`'s feeding thread (started now if it has none) read up to `n` items of its input `sid`."""
    feeder = job.feeder
    if feeder is None:
        feeder = job.feeder = Feeder(job, read, threads)
    feeder.ask(sid, n, send, store)
