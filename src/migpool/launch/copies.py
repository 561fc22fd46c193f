"""`migpool run`: any program, one copy per partition, or a queue of commands run as partitions come free.

The partitions come from a pool (`Compute` with the `mig` or `gpus` plugin): made or reused through reconcile,
leased for the run, put back with `restore`. Each copy runs as a streaming task (`stream_command`) on the worker
pinned to its partition: the worker starts the program, under its leader (leader.py), in a container of its own
(host/containment.py), with the partition's environment (`CUDA_VISIBLE_DEVICES` from the start) and its lease's
descriptor, and sends its output back line by line. The copy ends when the program exits, and what it left
running ends with it; closing the stream stops the program (SIGTERM to its process group, the container killed
after `grace`); a worker that dies takes its copies' containers with it (their leaders see it go). Signals and a
closed output stop the whole run (stopping.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import queue
import re
import select
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import PluginError
from ..host.containment import Container
from ..host.leases import inherited_fds
from ..observe.workload import record_task
from ..pool.api.info import instance_info
from ..pool.api.task import Task
from ..pool.scheduler.threads import Threads
from .stopping import Stop

if TYPE_CHECKING:
    from .printing import Printer

PLACEHOLDERS = ("index", "uuid", "profile", "gpu", "port")
TICK_S = 0.2  # how often a quiet program's stream says it is alive (so that a stop is seen at once)
READ_MAX = 1 << 16
BACKOFF_S = (0.5, 10.0)
TAIL = 10  # the last lines of a copy shown when it is given up  # a restart waits 0.5 s, doubling up to 10 s
DRAIN_S = 2.0  # once a copy's program exited and its container ended: the longest its pipes are read on
JOB_PREFIX = re.compile(r"^\s*\[([^\]]*)\]\s*")


def substitute(argv: Sequence[str], values: dict[str, Any]) -> list[str]:
    """Each argument with {index}, {uuid}, {profile}, {gpu} and {port} filled in ({{ and }} for braces)."""
    out = []
    for a in argv:
        try:
            out.append(a.format_map(values))
        except KeyError as e:
            raise PluginError(
                f"unknown placeholder {{{e.args[0]}}} in {a!r}: use "
                + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                + " (write {{ and }} for a literal brace)"
            ) from None
        except (ValueError, IndexError) as e:
            raise PluginError(f"bad braces in {a!r} ({e}): write {{{{ and }}}} for a literal brace") from None
    return out


def check_placeholders(argv: Sequence[str]) -> None:
    """Refuse a bad placeholder before anything starts."""
    substitute(argv, dict.fromkeys(PLACEHOLDERS, 0))


class _Lines:
    """Whole lines read from a pipe; at its end, what is left as a last line without a newline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.rest = b""
        self.ended = False

    def read(self) -> list[bytes]:
        chunk = os.read(self.fd, READ_MAX)
        if not chunk:
            self.ended = True
            last, self.rest = self.rest, b""
            return [last] if last else []
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        return lines


class _Copy:
    """A program started through its leader (launch/leader.py) in a container of its own: its output pipes, its
    leader's reports and the container, read and ended from the worker's side."""

    def __init__(self, args: list[str], env: dict[str, str], index: int) -> None:
        self.container = Container.make(f"copy{index}")
        status_r, status_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "migpool.launch.leader", str(status_w), str(os.getpid()), json.dumps(args)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**env, **self.container.env()},
                pass_fds=(status_w, *inherited_fds(env)),  # the partition's lease: held while anything of it runs
                start_new_session=True,  # Ctrl-C reaches `migpool run` only, which stops the copies
            )
        except BaseException:
            os.close(status_r)
            self.container.end()
            raise
        finally:
            os.close(status_w)
        self.container.add(self.proc.pid)  # before its Python has started: nothing forked yet
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = _Lines(self.proc.stdout.fileno())
        self.err = _Lines(self.proc.stderr.fileno())
        self.reports = _Lines(status_r)
        self.pid = 0  # the program's, once started
        self.error = ""  # why it could not start
        self.status: int | None = None  # once it exited
        self.ended = False

    def take_reports(self) -> None:
        """Read the leader's reports (one read); a leader gone without a word: its own exit status stands."""
        for line in self.reports.read():
            with contextlib.suppress(ValueError):
                said = json.loads(line)
                self.pid = said.get("pid", self.pid)
                self.error = said.get("error", self.error)
                if "error" in said:
                    self.status = 127
                if "status" in said:
                    self.status = int(said["status"])
        if self.reports.ended and self.status is None:
            try:
                self.status = self.proc.wait(DRAIN_S)
            except subprocess.TimeoutExpired:
                self.status = -signal.SIGKILL
            if not self.pid:
                self.error = self.error or f"its leader ended first ({describe_status(self.status)})"

    def stop(self, grace: float) -> None:
        """SIGTERM to the program's process group (through its leader); wait `grace` seconds for it to exit."""
        if self.status is not None:
            return
        with contextlib.suppress(OSError):
            os.kill(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.status is None and (left := deadline - time.monotonic()) > 0:
            if select.select([self.reports.fd], [], [], left)[0]:
                self.take_reports()

    def end(self) -> None:
        """End the container: every process of the copy, the leader included, killed and reaped."""
        if self.ended:
            return
        self.ended = True
        self.container.end()
        if self.proc.poll() is None:  # not in the container (it failed to join): by its PID
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(DRAIN_S)

    def drain(self) -> Iterator[tuple[str, str]]:
        """What is left in the output pipes, read until their end or for at most DRAIN_S (a writer that escaped
        the container keeps its end open)."""
        deadline = time.monotonic() + DRAIN_S
        pipes = {self.out.fd: ("out", self.out), self.err.fd: ("err", self.err)}
        pipes = {fd: v for fd, v in pipes.items() if not v[1].ended}
        while pipes and (left := deadline - time.monotonic()) > 0:
            for fd in select.select(list(pipes), [], [], left)[0]:
                name, lines = pipes[fd]
                for line in lines.read():
                    yield name, line.decode(errors="replace")
                if lines.ended:
                    del pipes[fd]

    def close(self) -> None:
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        os.close(self.reports.fd)


def stream_command(
    argv: Sequence[str], index: int = 0, port: int = 0, grace: float = 10.0, env: dict[str, str] | None = None
) -> Iterator[tuple[str, Any]]:
    """Run a program on this worker's partition (a streaming task): yields ("start", where), then ("out" or
    "err", line) for each whole line it prints, ("tick", None) while it is quiet, and ("exit", {"status": …,
    "seconds": …}) last (status negative: killed by that signal).

    The program runs in a container of its own (host/containment.py) under a leader (launch/leader.py) that
    holds the partition's lease with it: the copy ends when the program exits, and what it left running (a
    background child, a daemon) is ended then; its output is read until its pipes' end, for at most DRAIN_S.
    Closing the stream stops the program: SIGTERM to its process group, then, after `grace` seconds, the whole
    container is killed. If the worker dies, the leader ends the container."""
    info = instance_info()
    part = info.partition
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    values = dict(
        index=index,
        uuid=part.uuid if part else cuda,
        profile=part.profile if part else "gpu",
        gpu=part.gpu_index if part else (cuda or 0),
        port=port,
    )
    args = substitute(argv, values)
    extra = dict(env or {})
    extra.update(
        MIGPOOL_INDEX=str(index),
        MIGPOOL_PROFILE=str(values["profile"]),
        MIGPOOL_PARTITION=os.environ.get("MIGPOOL_PARTITION", ""),
    )
    if port:
        extra["MIGPOOL_PORT"] = str(port)
    started = time.monotonic()
    try:
        copy = _Copy(args, {**os.environ, **extra}, index)
    except OSError as e:
        yield ("start", dict(values, argv=args, pid=0, error=f"could not start its leader: {e.strerror or e}"))
        yield ("exit", dict(status=127, seconds=0.0))
        return
    try:
        sel = selectors.DefaultSelector()
        for name, lines in (("out", copy.out), ("err", copy.err), ("reports", copy.reports)):
            sel.register(lines.fd, selectors.EVENT_READ, (name, lines))
        early: list[tuple[str, str]] = []  # what it printed before its leader's report that it started came in
        said_start = False
        while copy.status is None:
            events = sel.select(TICK_S)
            if not events:
                yield ("tick", None)
                continue
            for key, _ in events:
                name, lines = key.data
                if name == "reports":
                    copy.take_reports()
                    if copy.reports.ended:
                        sel.unregister(key.fd)
                    continue
                got = [(name, line.decode(errors="replace")) for line in lines.read()]
                if lines.ended:
                    sel.unregister(key.fd)
                if said_start:
                    yield from got
                else:
                    early += got
            if not said_start and (copy.pid or copy.status is not None):
                said_start = True
                yield ("start", dict(values, argv=args, pid=copy.pid, **({"error": copy.error} if copy.error else {})))
                yield from early
        sel.close()
        copy.end()  # the program exited: what it left running goes now, and its pipes reach their end
        yield from copy.drain()
        yield ("exit", dict(status=copy.status, seconds=time.monotonic() - started))
    finally:
        copy.stop(grace)
        copy.end()
        copy.close()


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What `run_command` gives back: the program's exit status (negative: the signal that killed it), its
    output, and the partition it ran on."""

    status: int
    stdout: str
    stderr: str
    profile: str
    uuid: str
    seconds: float


def _run_command(
    argv: Sequence[str], index: int = 0, port: int = 0, grace: float = 10.0, env: dict[str, str] | None = None
) -> CommandResult:
    out: list[str] = []
    err: list[str] = []
    where: dict[str, Any] = {}
    done: dict[str, Any] = dict(status=127, seconds=0.0)
    for kind, detail in stream_command(argv, index, port, grace, env):
        if kind == "out":
            out.append(detail + "\n")
        elif kind == "err":
            err.append(detail + "\n")
        elif kind == "start":
            where = detail
            if detail.get("error"):
                err.append(detail["error"] + "\n")
        elif kind == "exit":
            done = detail
    return CommandResult(
        done["status"], "".join(out), "".join(err), str(where.get("profile", "")), str(where.get("uuid", "")),
        done["seconds"],
    )  # fmt: skip


def run_command(
    argv: Sequence[str], index: int = 0, port: int = 0, grace: float = 10.0, env: dict[str, str] | None = None
) -> Task[CommandResult]:
    """A task that runs a program on the partition of the worker that takes it: `run_command(["./bench"]) >>
    compute` gives a CommandResult. Its arguments take the placeholders `migpool run` takes."""
    check_placeholders(argv)
    return Task(_run_command, (list(argv),), dict(index=index, port=port, grace=grace, env=env))


def free_ports(n: int, base: int) -> list[int]:
    """`n` TCP ports from `base` up that nothing listens on now (each checked by binding it)."""
    out: list[int] = []
    port = base
    while len(out) < n:
        if port > 65535:
            raise PluginError(f"no {n} free TCP ports from {base} up (found {len(out)}): choose another --port-base")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                out.append(port)
            except OSError:
                pass
        port += 1
    return out


def exit_code(status: int) -> int:
    """A copy's status as a shell gives it: its code, or 128 + the signal that killed it."""
    return 128 - status if status < 0 else status


def describe_status(status: int | None) -> str:
    if status is None:
        return "stopped"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return "ok" if status == 0 else f"exit {status}"


@dataclasses.dataclass
class Command:
    """One command of a run: a copy (one per partition) or a line of a job file."""

    index: int
    argv: list[str]
    name: str = ""
    partition: str | None = None  # run on this profile
    min_memory: str | None = None  # or on a partition with this much memory
    port: int = 0
    status: int | None = None  # its last exit status (None: never finished)
    seconds: float = 0.0
    restarts: int = 0
    attempts: int = 0
    where: str = ""  # the partition it last ran on
    line: str = ""  # its line in the job file
    error: str = ""
    values: dict[str, Any] = dataclasses.field(default_factory=dict)  # its placeholders' values where it runs
    tail: collections.deque[str] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=TAIL))


def parse_job_line(line: str, number: int) -> Command | None:
    """A job file's line: `cmd args…`, optionally led by `[3g.40gb]` or `[min_memory=30GB]`; None for a blank line
    or a comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    job = Command(number, [], line=text)
    m = JOB_PREFIX.match(text)
    if m:
        want = m.group(1).strip()
        text = text[m.end() :]
        if want.startswith("min_memory="):
            job.min_memory = want.split("=", 1)[1].strip()
        elif want:
            job.partition = want
    try:
        job.argv = shlex.split(text)
    except ValueError as e:
        raise PluginError(f"job file line {number + 1}: {e}: {line.strip()!r}") from None
    if not job.argv:
        raise PluginError(f"job file line {number + 1} names a size but no command: {line.strip()!r}")
    check_placeholders(job.argv)
    return job


Event = tuple[str, Command, Any]  # ("start" | "out" | "err" | "exit", job, detail)
STOP = "stop"  # put on a runner's events by `request_stop`: its event loop stops the run


class CommandRunner:
    """Runs jobs on a pool, each as a streaming task, from `workers` threads that this object owns and joins;
    what they see goes to `events` for one printing thread (lines are never interleaved). `stop()` closes every
    stream: each program gets SIGTERM, then its container is killed after its grace. `request_stop()` asks the
    printing thread to stop it (safe from a signal handler)."""

    def __init__(self, compute: Any, grace: float, retries: int = 0, restart: str = "never", max_restarts: int = 5):
        self.compute = compute
        self.grace = grace
        self.retries = retries
        self.restart = restart
        self.max_restarts = max_restarts
        self.events: queue.SimpleQueue[Event | str | None] = queue.SimpleQueue()
        self.threads = Threads(on_error=self._died)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._streams: set[Any] = set()
        self._todo: list[Command] = []
        self.failure: BaseException | None = None

    def _died(self, name: str, e: BaseException) -> None:
        self.failure = e
        self.stop()

    def request_stop(self) -> None:
        self.events.put(STOP)  # (a SimpleQueue's put may be called from a signal handler)

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            s.close()

    def _task(self, job: Command) -> Task[Any]:
        return Task(
            stream_command,
            (job.argv,),
            dict(index=job.index, port=job.port, grace=self.grace),
            partition=job.partition,
            min_memory=job.min_memory,
        )

    def _once(self, job: Command) -> int | None:
        """Run the job once; its exit status, or None when the run was stopped first."""
        stream = self.compute.submit(self._task(job)).result()
        with self._lock:
            self._streams.add(stream)
        status: int | None = None
        began = time.monotonic()
        try:
            if self.stopping.is_set():
                stream.close()
            for kind, detail in stream:
                if kind == "tick":
                    continue
                if kind == "start":  # where it runs: a MIG profile, or a whole GPU by its UUID
                    job.where = detail["profile"] if detail["profile"] != "gpu" else str(detail["uuid"])
                    job.values = {k: detail[k] for k in PLACEHOLDERS}
                    if detail.get("error"):
                        job.error = detail["error"]
                elif kind in ("out", "err"):
                    job.tail.append(detail)
                elif kind == "exit":
                    status = detail["status"]
                    job.seconds += detail["seconds"]
                    record_task(job.argv, job.min_memory, began, job.where, detail["seconds"], ok=status == 0)
                    continue
                self.events.put((kind, job, detail))
        finally:
            with self._lock:
                self._streams.discard(stream)
            stream.close()
            if status is None:  # stopped: it ran until now
                job.seconds += time.monotonic() - began
        return None if self.stopping.is_set() and status is None else status

    def _serve(self, job: Command) -> None:
        """A copy: run it, and again as --restart says, waiting longer after each failure."""
        wait = BACKOFF_S[0]
        while True:
            job.attempts += 1
            job.status = self._once(job)
            self.events.put(("exit", job, job.status))
            if job.status is None or self.stopping.is_set():
                return
            again = self.restart == "always" or (self.restart == "on-failure" and job.status != 0)
            if not again or job.restarts >= self.max_restarts:
                if again:  # it keeps failing: the run stops, with its last lines
                    self.events.put(("gave-up", job, self.max_restarts))
                    self.stop()
                return
            job.restarts += 1
            if self.stopping.wait(wait):
                return
            wait = min(wait * 2, BACKOFF_S[1])

    def _take(self) -> Command | None:
        with self._lock:
            return self._todo.pop(0) if self._todo and not self.stopping.is_set() else None

    def _drain(self) -> None:
        """A job-queue worker: take lines until none is left; a failed one goes back while it has retries."""
        while (job := self._take()) is not None:
            job.attempts += 1
            job.status = self._once(job)
            self.events.put(("exit", job, job.status))
            if job.status not in (0, None) and job.attempts <= self.retries and not self.stopping.is_set():
                with self._lock:
                    self._todo.append(job)

    def copies(self, jobs: list[Command], ready_port: bool = False, ready_cmd: Sequence[str] = ()) -> None:
        for job in jobs:
            self.threads.start(f"migpool-run-{job.name}", self._serve, job)
        if ready_port or ready_cmd:
            self.threads.start("migpool-run-ready", self._ready, jobs, ready_cmd)

    @staticmethod
    def _is_ready(job: Command, ready_cmd: Sequence[str]) -> bool:
        if not ready_cmd:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", job.port), timeout=0.2):
                return True
            return False
        if not job.values:  # not started yet
            return False
        try:
            done = subprocess.run(
                substitute(ready_cmd, job.values), stdin=subprocess.DEVNULL, capture_output=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def _ready(self, jobs: list[Command], ready_cmd: Sequence[str]) -> None:
        """Wait until every copy is ready (accepts connections on its port, or its ready command succeeds); then
        say where each is."""
        waiting = {j.index: j for j in jobs if j.port or ready_cmd}
        while waiting and not self.stopping.is_set():
            for i, j in list(waiting.items()):
                if self._is_ready(j, ready_cmd):
                    del waiting[i]
            if waiting and self.stopping.wait(0.2):
                return
        if not self.stopping.is_set():
            where = [(j.name, f"http://127.0.0.1:{j.port}" if j.port else j.where) for j in jobs]
            self.events.put(("ready", jobs[0], where))

    def queue(self, jobs: list[Command], parallel: int) -> None:
        self._todo = list(jobs)
        for i in range(max(1, min(parallel, len(jobs)))):
            self.threads.start(f"migpool-run-q{i}", self._drain)

    def wait(self, on_event: Callable[[Event], None]) -> None:
        """Hand every event to `on_event` (on this thread) until the jobs are done; then join the threads."""
        done = threading.Event()

        def watch() -> None:
            while self.threads.join(3600.0):
                pass
            done.set()
            self.events.put(None)

        waiter = threading.Thread(target=watch, name="migpool-run-wait", daemon=True)
        waiter.start()
        try:
            while True:
                ev = self.events.get()
                if ev is None:
                    break
                if isinstance(ev, str):
                    self.stop()
                    continue
                on_event(ev)
        finally:
            self.stop()
            waiter.join()


def run(
    compute: Any,
    jobs: list[Command],
    *,
    queue_mode: bool,
    parallel: int,
    printer: Printer,
    grace: float = 10.0,
    retries: int = 0,
    restart: str = "never",
    max_restarts: int = 5,
    ready_port: bool = False,
    ready_cmd: Sequence[str] = (),
    on_progress: Callable[[list[Command]], None] | None = None,
    stop: Stop | None = None,
) -> tuple[int, list[Command]]:
    """Run the jobs (copies, or a queue over `parallel` partitions) on an open pool, printing their lines; the
    run's exit status (0, or the first failure's) and the jobs. A signal (SIGINT, SIGTERM, SIGHUP) or the
    printer's stdout being closed stops every program (SIGTERM to its process group, its whole container killed
    after `grace`); the status is then `stop.status()` (128 + the signal, 141 for a closed output). `stop`: the
    caller's, owning the signals from before the pool was opened (`migpool run`); else this call owns them."""
    runner = CommandRunner(compute, grace, retries=retries, restart=restart, max_restarts=max_restarts)
    failed_first: list[Command] = []
    owned = stop is None
    stopper = stop if stop is not None else Stop()

    def on_closed(which: str) -> None:
        if which == "out":
            printer.write("err", "migpool run: its output was closed, so every copy stops\n")
        runner.request_stop()

    def on_event(ev: Event) -> None:
        kind, job, detail = ev
        if kind in ("out", "err"):
            printer.line(job, kind, detail)
        elif kind == "start" and detail.get("error"):
            printer.note(job, f"could not start: {detail['error']}")
        elif kind == "exit":
            if detail is None:
                printer.note(job, "stopped")
            else:
                printer.note(job, f"{describe_status(detail)} after {job.seconds:.1f}s")
                if detail != 0 and job not in failed_first:
                    failed_first.append(job)
            if on_progress is not None:
                on_progress(jobs)
        elif kind == "gave-up":
            printer.note(job, f"failed {detail + 1} times, so the run stops; its last lines:")
            for text in job.tail:
                printer.note(job, f"  {text}")
        elif kind == "ready":
            for name, url in detail:  # one a line: a list of seven endpoints would pass 80 columns
                printer.write("err", f"ready: {name} {url}\n")

    printer.on_closed = on_closed
    with stopper if owned else contextlib.nullcontext(stopper):
        stopper.divert(lambda signum: runner.request_stop())
        try:
            if queue_mode:
                runner.queue(jobs, parallel)
            else:
                runner.copies(jobs, ready_port, ready_cmd)
            runner.wait(on_event)
        finally:
            printer.close()
    if runner.failure is not None:
        raise runner.failure
    stopper.output_closed = stopper.output_closed or "out" in printer.closed
    code = stopper.status()
    if code is not None:
        return code, jobs
    final = [j for j in failed_first if j.status not in (0, None)]
    return (exit_code(final[0].status) if final and final[0].status is not None else 0), jobs
