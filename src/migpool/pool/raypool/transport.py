"""A Ray pool's collections (shared.py): the Ray actor that serves them and the transport its driver and its
worker actors call them through."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from typing import Any

from ..shared.proxies import refused
from ..shared.state import Caller, SharedState, Waiter

SHARED_ENV = "MIGPOOL_SHARED_ACTOR"  # the name of the Ray actor that serves a pool's collections


class SharedActor:
    """The Ray actor that serves one Ray pool's collections (shared.py), named after the pool so that every
    worker actor and the driver find it. An asyncio actor: a call that waits (a queue's get, a barrier, a lock)
    awaits its answer without holding up the others; all of them run on its one event loop thread."""

    def __init__(self) -> None:
        self.state = SharedState()

    async def call(self, pid: int, thread: int, cid: int, kind: str, name: str, op: str, args: tuple[Any, ...]) -> Any:
        import asyncio

        now: list[tuple[bool, Any]] = []
        fut: Any = None

        def answer(ok: bool, value: Any) -> None:  # (on this loop's thread: from this call or another one)
            if fut is None:
                now.append((ok, value))
            elif not fut.done():
                fut.set_result((ok, value))

        self.state.call(Waiter(Caller(pid, thread), cid, answer), kind, name, op, args)
        if now:  # (the usual call: answered at once, no future)
            return now[0]
        fut = asyncio.get_running_loop().create_future()
        return await fut

    async def withdraw(self, pid: int, thread: int, cid: int) -> bool:
        return self.state.withdraw(Caller(pid, thread), cid)

    async def gone(self, pid: int) -> None:
        self.state.gone(pid)


class RayTransport:
    """Calls on a Ray pool's collections, from its driver or from its worker actors (shared.Transport). The
    actor is made by the first caller (detached, so that it outlives that caller) and killed when the pool
    closes (RayPool.close); a Ray cluster that migpool started for the pool ends with it in any case."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._actor: Any = None
        self._ids = itertools.count()

    def actor(self, make: bool = True) -> Any:
        import ray

        if self._actor is None:
            cls = ray.remote(SharedActor)
            if make:
                self._actor = cls.options(
                    name=self.name, lifetime="detached", get_if_exists=True, num_cpus=0, max_concurrency=10_000
                ).remote()
            else:
                try:
                    self._actor = ray.get_actor(self.name)
                except ValueError:  # nobody used a collection: it was never made
                    return None
        return self._actor

    def call(self, kind: str, name: str, op: str, args: tuple[Any, ...], timeout: float | None = None) -> Any:
        import ray

        actor = self.actor()
        pid, thread, cid = os.getpid(), threading.get_ident(), next(self._ids)
        ref = actor.call.remote(pid, thread, cid, kind, name, op, args)
        try:
            ok, value = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            ray.get(actor.withdraw.remote(pid, thread, cid))  # answered now with TIMED_OUT, unless it was already
            ok, value = ray.get(ref)
        if not ok:
            raise refused(value)
        return value

    def gone(self, pid: int) -> None:
        """A worker actor died: its waiting calls go, the locks it held are released."""
        actor = self.actor(make=False)
        if actor is not None:
            actor.gone.remote(pid)

    def close(self) -> None:
        import ray

        actor = self.actor(make=False)
        self._actor = None
        if actor is None:
            return
        with contextlib.suppress(Exception):  # already gone with its cluster
            ray.kill(actor, no_restart=True)
        # ray.kill only asks: the name stays registered until the actor is dead. Wait (bounded) so that the pool's
        # collections are gone when close() returns.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                ray.get_actor(self.name)
            except (ValueError, ray.exceptions.RayError, ConnectionError):  # no such actor any more, or no cluster
                return
            time.sleep(0.02)
