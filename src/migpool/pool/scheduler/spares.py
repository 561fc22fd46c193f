"""Warm spares (issue 47): worker processes started before their partition is known, with the pool's preload
modules imported, so that a worker needed later (a partition dynamic MIG just made, a restart after a crash or a
timeout, the next process of a `reuse_processes=False` pool) starts without paying the interpreter and the imports
again. The spare's side is pool/worker/spares.py; docs/guides/warm.md says when they pay and what they cost.

A pool keeps `count` spares (MIGPOOL_SPARES; by default 1 with dynamic MIG, `reuse_processes=False` or elastic
nodes, else none). Each is started on the scheduler's spawning thread, as every worker is (the kernel ends it with that
thread: PR_SET_PDEATHSIG), in a container of its own (host/containment.py), which the worker keeps when the spare
is taken. Taking one posts its replacement to the same thread, behind the start it served.

A spare fits a worker when both run the same interpreter with the same start-up environment (PYTHON* and LD_*
variables): the rest of the worker's environment, its partition's above all, is handed over at the last moment.
The memory bound (MIGPOOL_SPARE_MAX_MIB) is held two ways: where containers are cgroups with a memory controller,
the kernel limits each spare's cgroup to it (lifted when the spare becomes a worker, which keeps the cgroup), and
everywhere the spares' watcher thread reads each waiting spare's resident memory every CHECK_S, from its start,
through its imports, while it waits. A spare over the bound is ended (by the kernel, or by the watcher) and spares
are turned off, with the reason in `stats()`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ...host.containment import Container
from ...host.leases import LEASE_FD_ENV
from ..api.providers import WorkerSpec
from ..wire.protocol import End, channel
from ..worker.distributed import INIT_ENV
from ..worker.lifecycle import AROUND_ENV
from ..worker.spares import GPU_OPENED, PARENT_ENV, PRELOAD_ENV, SPARE_ENV

if TYPE_CHECKING:
    from .core import Scheduler

SPARES_ENV = "MIGPOOL_SPARES"  # how many spares a local process pool keeps (overrides the default)
MAX_MIB_ENV = "MIGPOOL_SPARE_MAX_MIB"  # the most memory (resident) a parked spare may hold
DEFAULT_MAX_MIB = 4096
CHECK_S = 0.2  # how often the watcher reads the waiting spares' memory
# what a worker's environment holds of its partition and its place in the pool: never in a spare's
PER_WORKER = (
    "CUDA_VISIBLE_DEVICES",
    "MIGPOOL_PARTITION",
    "MIGPOOL_WORKER_INDEX",
    "MIGPOOL_GLOBAL_WORKER_INDEX",
    LEASE_FD_ENV,
    INIT_ENV,
    AROUND_ENV,
)


def _startup_keys(env: Mapping[str, str]) -> dict[str, str]:
    """What the interpreter reads as it starts (a spare has read its own already)."""
    return {k: v for k, v in env.items() if k.startswith(("PYTHON", "LD_"))}


def preload_of(worker: Any) -> tuple[str, ...]:
    """The modules that `worker` (a Worker) asks its processes to preload: its `preload` field, where it has one."""
    names = getattr(worker, "preload", ()) or ()
    return (names,) if isinstance(names, str) else tuple(names)  # (one name given as a string)


class Pool(Protocol):
    """What `settings_for` reads of a local process pool (Compute)."""

    @property
    def worker(self) -> Any: ...

    @property
    def plugins(self) -> Sequence[Any]: ...

    @property
    def bounds(self) -> Any: ...  # its Nodes: elastic ones start workers as the load grows

    def worker_spec(self, i: int, n: int, part: Any) -> WorkerSpec: ...


@dataclass(frozen=True)
class SpareSettings:
    """What a pool's spares are: how many wait, their interpreter and environment, what they import, and the
    most memory one may hold."""

    count: int
    python: str
    env: dict[str, str]  # a worker's environment without a partition and an index
    preload: tuple[str, ...] = ()
    max_mib: int = DEFAULT_MAX_MIB


def settings_for(pool: Pool) -> SpareSettings | None:
    """The spares a local process pool keeps, or None for none."""
    dynamic = any(p.dynamic_mig() is not None for p in pool.plugins)
    elastic = bool(getattr(pool.bounds, "elastic", False))  # (a node added as the load grows starts workers)
    default = 1 if dynamic or elastic or not pool.worker.reuse_processes else 0
    text = os.environ.get(SPARES_ENV, "")
    count = int(text) if text.strip().isdigit() else default
    if count <= 0:
        return None
    text = os.environ.get(MAX_MIB_ENV, "")
    max_mib = int(text) if text.strip().isdigit() else DEFAULT_MAX_MIB
    try:
        spec = pool.worker_spec(0, 1, None)  # (the plugins' environment for a worker without a partition)
    except Exception:  # noqa: BLE001 - a plugin that cannot make one: workers start as they always did
        return None
    env = {k: v for k, v in spec.env.items() if k not in PER_WORKER}
    modules = [*preload_of(pool.worker), *(m for p in pool.plugins for m in getattr(p, "preload", lambda: ())())]
    return SpareSettings(count, spec.python, env, tuple(dict.fromkeys(modules)), max_mib)


def rss_mib(pid: int) -> float | None:
    """Process `pid`'s resident memory in MiB (from /proc), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Spare:
    """One spare: its process, its container, the pool's ends of its channel and its ready pipe."""

    proc: subprocess.Popen[bytes]
    container: Container
    from_worker: End
    to_worker: End
    ready_fd: int
    limited: bool = False  # the kernel holds its cgroup to the memory bound (lifted when it is taken)
    started: float = field(default_factory=time.monotonic)
    parked: float | None = None  # how long its imports took, once it said it waits
    opened_gpu: bool = False  # its imports opened a GPU device: it ended itself, and serves no partition

    def poll_parked(self) -> bool:
        """Whether it has done its imports and waits (its ready pipe has its byte)."""
        if self.parked is None and not self.opened_gpu and self.ready_fd >= 0:
            if select.select([self.ready_fd], [], [], 0)[0]:
                with contextlib.suppress(OSError):
                    said = os.read(self.ready_fd, 1)  # (b"" once it closed the pipe: said before, or died)
                    self.opened_gpu = said == GPU_OPENED
                    if said and not self.opened_gpu:
                        self.parked = time.monotonic() - self.started
        return self.parked is not None

    def close_ready(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1

    def end(self) -> None:
        """Kill it, its container and its process group; close the pool's ends."""
        with contextlib.suppress(OSError):
            self.container.end()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.close_ready()
        for end in (self.from_worker, self.to_worker):
            with contextlib.suppress(OSError):
                end.close()


class Spares:
    """The spares of one scheduler (its `spares`): started and replaced on its spawning thread, ended with it."""

    def __init__(self, sched: Scheduler, settings: SpareSettings) -> None:
        self.sched, self.settings = sched, settings
        self.lock = threading.Lock()
        self.idle: list[Spare] = []
        self.starting = 0
        self.closed = False
        self.used = 0
        self.started = 0
        self.off: str | None = None  # why spares were turned off
        self.learned: dict[str, None] = {}  # modules of the functions the pool was given, in order
        self.learning = True  # (until one of those opens a GPU device at import: gpu_opened)
        self.notes: list[str] = []
        self.stopped = threading.Event()  # (set by close: the watcher ends)

    def start(self) -> None:
        """Start the spares, on the spawning thread, after the starts queued there (the pool's own workers), and
        their watcher, a thread of the scheduler's (joined when it shuts down)."""
        self._post(self.top_up)
        self.sched.threads.start("migpool-spares", self._watch)

    def _watch(self) -> None:
        while not self.stopped.wait(CHECK_S):
            self.check_memory()

    def _post(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the spawner stopped: the pool is closed
            self.sched.spawner.post(fn)

    def fits(self, spec: WorkerSpec) -> bool:
        s = self.settings
        return spec.python == s.python and _startup_keys(spec.env) == _startup_keys(s.env)

    def take(self, spec: WorkerSpec) -> Spare | None:
        """A spare for the worker `spec` (the oldest that still lives), or None; its replacement is posted."""
        if not self.fits(spec):
            return None
        self._learn()
        dead: list[Spare] = []
        got = None
        with self.lock:
            while self.idle and got is None:
                s = self.idle.pop(0)
                s.poll_parked()
                if s.proc.poll() is None and not s.opened_gpu:
                    got = s
                else:
                    dead.append(s)
            if got is not None:
                self.used += 1
            if got is not None:
                got.poll_parked()
                got.close_ready()
                if got.limited:  # (the worker it becomes has no such bound)
                    got.limited = not got.container.limit_memory(None)
        for s in dead:
            s.poll_parked()
            if s.opened_gpu:
                self.gpu_opened()
            s.end()
        self._post(self.top_up)
        return got

    def gpu_opened(self) -> None:
        """A spare's imports opened a GPU device before it had a partition. Modules learned from tasks are not
        preloaded any more; where only the pool's own preload list was imported, spares are turned off."""
        with self.lock:
            if self.learning and self.learned:
                self.learning = False
                self.learned.clear()
                self.notes.append("a task's module opened a GPU device when imported: spares preload only preload=")
            else:
                self.off = "a preload module opened a GPU device when imported (before the partition was known)"

    def _learn(self) -> None:
        """Note the modules of the functions of the tasks the pool holds now: spares started later import them."""
        if not self.learning:
            return
        sched = self.sched
        with sched.lock:
            jobs = [*sched.pending, *(j for w in sched.workers for j in w.outstanding)]
        for j in jobs:
            fn = getattr(j.task.fn, "fn", j.task.fn)  # (a plugin's decorated function: the user's, inside)
            mod = getattr(fn, "__module__", None)
            if isinstance(mod, str) and mod not in ("__main__", "builtins") and not mod.startswith("migpool"):
                self.learned.setdefault(mod)

    def modules(self) -> list[str]:
        """What a spare started now imports: the pool's preload modules, then those learned from its tasks."""
        return list(dict.fromkeys([*self.settings.preload, *self.learned]))

    def top_up(self) -> None:
        """On the spawning thread: start spares until `count` wait, unless the pool closed or spares are off."""
        self.check_memory()
        while True:
            with self.lock:
                if self.closed or self.off or len(self.idle) + self.starting >= self.settings.count:
                    return
                self.starting += 1
            spare = None
            try:
                spare = self._start_one()
            finally:
                with self.lock:
                    self.starting -= 1
                    keep = spare is not None and not self.closed
                    if keep:
                        self.idle.append(spare)  # type: ignore[arg-type]
            if spare is None:
                return
            if not keep:
                spare.end()
                return

    def _start_one(self) -> Spare | None:
        s = self.settings
        p_r, c_w = channel()  # spare -> pool
        c_r, p_w = channel()  # pool -> spare
        ready_r, ready_w = os.pipe()
        container = Container.make("spare")
        limited = container.limit_memory(s.max_mib * 2**20)  # (before the spare joins it: nothing charged yet)
        modules = self.modules()
        env = dict(s.env, **container.env())
        env.update({PARENT_ENV: str(os.getpid()), SPARE_ENV: str(ready_w), PRELOAD_ENV: ",".join(modules)})
        proc = None
        try:
            proc = self.sched.launch(
                [s.python, "-m", "migpool.pool.worker", c_r.spec(), c_w.spec()],
                env=env,
                pass_fds=(*c_r.fds(), *c_w.fds(), ready_w),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            c_r.close()
            c_w.close()
            os.close(ready_w)
            if proc is None:
                container.end()
                os.close(ready_r)
                p_r.close()
                p_w.close()
        if proc is None:
            return None
        container.add(proc.pid, joins_itself=True)
        self.started += 1
        return Spare(proc, container, p_r, p_w, ready_r, limited)

    def check_memory(self) -> None:
        """End every spare if one holds more than the bound (or the kernel ended one at its cgroup's limit), and
        start no more (the reason goes to stats)."""
        bound = self.settings.max_mib
        with self.lock:
            for s in self.idle:
                s.poll_parked()  # (its import time, once its imports are done)
            over = [(s, m) for s in self.idle if (m := rss_mib(s.proc.pid)) is not None and m > bound]
            killed = [s for s in self.idle if s.limited and s.proc.poll() is not None and s.container.oom_kills()]
            if not over and not killed:
                return
            gone, self.idle = self.idle, []
            if over:
                s, m = over[0]
                self.off = f"a spare held {m:.0f} MiB, over the bound of {bound} MiB ({MAX_MIB_ENV})"
            else:
                self.off = f"a spare went over the bound of {bound} MiB ({MAX_MIB_ENV}): the kernel ended it"
            self.off += "; spares are off for this pool"
        for s in gone:
            s.end()

    def close(self) -> None:
        """End every spare (the pool closes); none is started after this."""
        self.stopped.set()
        with self.lock:
            self.closed = True
            gone, self.idle = self.idle, []
        for s in gone:
            s.end()

    def stats(self) -> dict[str, Any]:
        """What `Compute.stats()` shows under "spares"."""
        self.check_memory()
        rows = []
        with self.lock:  # (take() closes a spare's ready pipe under it)
            for s in self.idle:
                s.poll_parked()
            unfit = [s for s in self.idle if s.opened_gpu]
            self.idle = [s for s in self.idle if not s.opened_gpu]
        for s in unfit:
            self.gpu_opened()
            s.end()
        if unfit:
            self._post(self.top_up)
        with self.lock:
            for s in self.idle:
                parked = s.poll_parked()
                rss = rss_mib(s.proc.pid)
                rows.append(
                    dict(
                        pid=s.proc.pid,
                        parked=parked,
                        import_s=round(s.parked, 3) if s.parked is not None else None,
                        rss_mib=round(rss, 1) if rss is not None else None,
                    )
                )
        return dict(
            wanted=self.settings.count,
            idle=rows,
            used=self.used,
            started=self.started,
            preload=self.modules(),
            max_mib=self.settings.max_mib,
            off=self.off,
            notes=list(self.notes),
        )
