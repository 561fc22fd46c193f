"""One migpool worker as a Ray actor: it runs the messages the driver sends in batches, and a stream task (or a
checkpoint task) on a thread of its own whose items and checkpoints the driver takes between calls."""

from __future__ import annotations

import collections
import os
import threading
from typing import Any

from ..api.providers import Local, Node, PluginHooks, WorkerSpec
from ..shared.proxies import install
from ..wire.messages import Feed, Pause, Paused, RunTask, TaskDone, TaskFailed, ToWorker
from ..wire.streams import WINDOW
from ..worker import lifecycle
from ..worker.distributed import run_initializers
from ..worker.main import Runner
from .codec import RayCodec
from .transport import SHARED_ENV, RayTransport

Mark = tuple[float | None, float | None]  # a checkpoint's (done, total)
Taken = tuple[list[Any], dict[int, int], list[Mark], TaskDone | TaskFailed | Paused | None]


class RayLink:
    """A Ray actor's side of a stream or checkpoint task: the task runs on a thread of the actor
    (WorkerActor.stream) while the driver takes its items and checkpoints, feeds its input, cancels it and asks it
    to stop at its next checkpoint through the actor's methods, which run in between."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: collections.deque[Any] = collections.deque()
        self.wants: dict[int, int] = {}
        self.feeds: dict[int, collections.deque[tuple[Any, int]]] = {}
        self.cancelled: set[int] = set()  # kept across tasks: a cancel may come before its task starts
        self.marks: list[Mark] = []  # the checkpoints reached since the driver last took them
        self.pauses: set[int] = set()  # the tasks asked to stop at their next checkpoint (dynamic MIG)
        self.final: TaskDone | TaskFailed | Paused | None = None

    def begin(self) -> None:
        with self.cond:
            self.items.clear()
            self.wants.clear()
            self.feeds.clear()
            self.marks.clear()
            self.pauses.clear()  # (a pause is sent after its task, never before: one left is for an ended task)
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
        """The task reached a checkpoint: the driver takes it (dynamic MIG learns the task's progress); True if
        the task was asked to stop here (its worker then sends Paused with this checkpoint's state)."""
        with self.cond:
            self.marks.append((done, total))
            self.cond.notify_all()
            if tid in self.pauses:
                self.pauses.discard(tid)
                return True
            return False

    def pause(self, tid: int) -> None:
        with self.cond:
            self.pauses.add(tid)

    def next_feed(self, tid: int, sid: int) -> tuple[Any, int]:
        with self.cond:
            q = self.feeds.setdefault(sid, collections.deque())
            self.cond.wait_for(lambda: bool(q))
            return q.popleft()

    def end(self, frame: TaskDone | TaskFailed | Paused) -> None:
        with self.cond:
            self.final = frame
            self.cond.notify_all()

    def take(self, wait_s: float) -> Taken:
        """What the task sent since the last take: its items, its requests for input, its checkpoints, and its
        last frame once it ended (after its last item). Waits up to `wait_s` for any of them."""
        with self.cond:
            self.cond.wait_for(lambda: self.items or self.wants or self.marks or self.final is not None, wait_s)
            items, wants, marks = list(self.items), dict(self.wants), list(self.marks)
            self.items.clear()
            self.wants.clear()
            self.marks.clear()
            self.cond.notify_all()
            return items, wants, marks, self.final

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
                self._stream(m)  # its items, checkpoints and end go out through take()
                continue
            if type(m) is Pause:  # stop the task on its thread at its next checkpoint
                self.link.pause(m.tid)
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

    def take(self, wait_s: float) -> Taken:
        items, wants, marks, final = self.link.take(wait_s)
        if final is not None and self.streaming is not None:
            self.streaming.join()
            self.streaming = None
        return items, wants, marks, final

    def feed(self, sid: int, feeds: list[Feed]) -> None:
        self.link.feed(sid, feeds)

    def cancel(self, tid: int) -> None:
        self.link.cancel(tid)
