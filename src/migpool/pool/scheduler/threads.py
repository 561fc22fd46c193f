"""Threads with an owner: each is named, kept until it ends, and joined by its owner within a bounded time; an
exception that ends one is handed to the owner (`on_error`) instead of being lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger("migpool.pool")
T = TypeVar("T")


class Threads:
    """The threads one owner (a scheduler, a worker slot, a controller) starts."""

    def __init__(self, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.on_error = on_error
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the owner, which makes the pool say so
                log.error("migpool thread %s died: %r", name, e)
                if self.on_error is not None:
                    self.on_error(name, e)

        t = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()
        return t

    def join(self, timeout: float) -> list[str]:
        """Join every thread (but the calling one) within `timeout` seconds in all; the names still running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive() and t is not me]


class Spawner:
    """One long-lived thread that starts every worker process of a pool (and runs restarts).

    A worker asks the kernel to tell it when its parent dies (PR_SET_PDEATHSIG), and then ends its container, and
    the kernel counts the *thread* that started it as its parent, so every worker must be started from a thread
    that lasts as long as the pool: a worker started by a reader thread that then ends would end with it."""

    def __init__(self, name: str, threads: Threads) -> None:
        self._q: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threads.start(name, self._run)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - the caller's future carries it
                fut.set_exception(e)

    def post(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the spawning thread, later; raises RuntimeError once stopped."""
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the spawner is stopped")
            self._q.put((fn, fut))
        return fut

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the spawning thread and return its result (at once if called from that thread)."""
        if threading.current_thread() is self._thread:
            return fn()
        return self.post(fn).result()

    def stop(self) -> None:
        """No more calls; the thread ends once those queued have run (its owner joins it)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._q.put(None)
