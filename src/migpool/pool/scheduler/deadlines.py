"""Queue timeouts: a job that no worker has started within its task's `queue_timeout` leaves the queue and fails
with QueueTimeoutError at that moment, never having run. A job a worker took once is past its queue timeout for
good (back in the queue after its worker died, it waits as any retry does); the watch holds each job weakly, so a
finished job's result and arguments are not kept alive until its deadline. One thread of the scheduler's watches
the deadlines; it is started with the first such job and ends when the pool closes (its owner joins it)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Callable

from .jobs import Job
from .threads import Threads


class QueueDeadlines:
    """The deadlines of the queued jobs that have one; `expire(job)` is called for each one that passes."""

    def __init__(self, threads: Threads, expire: Callable[[Job], None]) -> None:
        self._threads = threads
        self._expire = expire
        self._heap: list[tuple[float, int, weakref.ref[Job]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._started = False
        self._stopped = False

    def add(self, job: Job, seconds: float) -> None:
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), weakref.ref(job)))
            start = not self._started
            self._started = True
            self._cond.notify()
        if start:
            self._threads.start("migpool-queue-deadlines", self._run)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                due: list[Job] = []
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    job = heapq.heappop(self._heap)[2]()
                    if job is not None and job.attempts == 0:  # (gone, or taken by a worker: nothing to expire)
                        due.append(job)
            for job in due:
                self._expire(job)
