"""One migpool worker as a Ray actor: it runs the messages the driver sends in batches, and a stream task on a
thread of its own whose items the driver takes between calls."""

from __future__ import annotations

import collections
import os
import threading
from typing import Any

from ..api.providers import Local, Node, PluginHooks, WorkerSpec
from ..shared.proxies import install
from ..wire.messages import Feed, Paused, RunTask, TaskDone, TaskFailed, ToWorker
from ..wire.streams import WINDOW
from ..worker import lifecycle
from ..worker.distributed import run_initializers
from ..worker.main import Runner
from .codec import RayCodec
from .transport import SHARED_ENV, RayTransport


class RayLink:
    """A Ray actor's side of a stream: the task runs on a thread of the actor (WorkerActor.stream) while the
    driver takes its items, feeds its input and cancels it through the actor's methods, which run in between."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: collections.deque[Any] = collections.deque()
        self.wants: dict[int, int] = {}
        self.feeds: dict[int, collections.deque[tuple[Any, int]]] = {}
        self.cancelled: set[int] = set()  # kept across tasks: a cancel may come before its task starts
        self.final: TaskDone | TaskFailed | Paused | None = None

    def begin(self) -> None:
        with self.cond:
            self.items.clear()
            self.wants.clear()
            self.feeds.clear()
            self.final = None

    def emit(self, tid: int, item: Any) -> bool:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) < WINDOW or tid in self.cancelled)
            if tid in self.cancelled:
                return False
            self.items.append(item)
            self.cond.notify_all()
            return True

    def want(self, tid: int, sid: int, n: int) -> None:
        with self.cond:
            self.wants[sid] = self.wants.get(sid, 0) + n
            self.cond.notify_all()

    def checkpointed(self, tid: int, done: float | None, total: float | None) -> bool:
        """A checkpoint task on Ray runs to its end: dynamic MIG moves tasks on local pools only."""
        return False

    def next_feed(self, tid: int, sid: int) -> tuple[Any, int]:
        with self.cond:
            q = self.feeds.setdefault(sid, collections.deque())
            self.cond.wait_for(lambda: bool(q))
            return q.popleft()

    def end(self, frame: TaskDone | TaskFailed | Paused) -> None:
        with self.cond:
            self.final = frame
            self.cond.notify_all()

    def take(self, wait_s: float) -> tuple[list[Any], dict[int, int], TaskDone | TaskFailed | Paused | None]:
        """What the task sent since the last take: its items, its requests for input, and its last frame once it
        ended (after its last item). Waits up to `wait_s` for any of them."""
        with self.cond:
            self.cond.wait_for(lambda: self.items or self.wants or self.final is not None, wait_s)
            items, wants = list(self.items), dict(self.wants)
            self.items.clear()
            self.wants.clear()
            self.cond.notify_all()
            return items, wants, self.final

    def feed(self, sid: int, feeds: list[Feed]) -> None:
        with self.cond:
            self.feeds.setdefault(sid, collections.deque()).extend((f.data, f.state) for f in feeds)
            self.cond.notify_all()

    def cancel(self, tid: int) -> None:
        with self.cond:
            self.cancelled.add(tid)
            self.cond.notify_all()


class WorkerActor:
    """One migpool worker on a Ray node: its process started with the partition's environment."""

    def __init__(self, plugins: list[PluginHooks], spec: WorkerSpec, count: int) -> None:
        self.link = RayLink()
        self.runner = Runner(RayCodec(), self.link)
        self.streaming: threading.Thread | None = None  # the thread running a stream task; take() joins it
        if SHARED_ENV in spec.env:  # the pool's collections, for its tasks (an actor made outside a pool has none)
            install(RayTransport(spec.env[SHARED_ENV]))
        run_initializers()  # a plugin's set-up for this process (torch.distributed: its rank)
        self.around = lifecycle.enter()  # Plugin.create(...).with_around_process (for the actor's life)
        node = Node(spec.node, count, Local(), None)
        try:
            for p in plugins:  # e.g. the simulator's record of processes on partitions
                p.worker_started(spec, os.getpid(), node)
        finally:
            node.close()

    def ready(self) -> dict[str, Any]:
        return dict(pid=os.getpid(), cuda=os.environ.get("CUDA_VISIBLE_DEVICES"))

    def run(self, msgs: list[ToWorker]) -> list[TaskDone | TaskFailed | Paused]:
        out = []
        for m in msgs:
            if isinstance(m, RunTask) and m.streams:
                self._stream(m)  # its items and its end go out through take()
                continue
            frame = self.runner.handle(m)
            if frame is not None:
                out.append(frame)
        return out

    def _stream(self, msg: RunTask) -> None:
        self.link.begin()
        t = threading.Thread(
            target=lambda: self.link.end(self.runner.run(msg)), name=f"migpool-stream-{msg.tid}", daemon=True
        )
        self.streaming = t
        t.start()

    def take(self, wait_s: float) -> tuple[list[Any], dict[int, int], TaskDone | TaskFailed | Paused | None]:
        items, wants, final = self.link.take(wait_s)
        if final is not None and self.streaming is not None:
            self.streaming.join()
            self.streaming = None
        return items, wants, final

    def feed(self, sid: int, feeds: list[Feed]) -> None:
        self.link.feed(sid, feeds)

    def cancel(self, tid: int) -> None:
        self.link.cancel(tid)
