"""`migpool run`: any program, one copy per partition, or a queue of commands run as partitions come free.

The partitions come from a pool (`Compute` with the `mig` or `gpus` plugin): made or reused through reconcile,
leased for the run, put back with `restore`. Each copy runs as a streaming task (`run_command`) on the worker
pinned to its partition: the worker starts the program in its own session with the partition's environment
(`CUDA_VISIBLE_DEVICES` from the start) and sends its output back line by line; closing the stream stops the
program (SIGTERM to its process group, SIGKILL after `grace`). Nothing else is needed to clean up: a worker
ends what it left running, and the pool ends its workers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import queue
import re
import selectors
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import PluginError
from ..pool.api.info import instance_info
from ..pool.api.task import Task
from ..pool.scheduler.threads import Threads

PLACEHOLDERS = ("index", "uuid", "profile", "gpu", "port")
TICK_S = 0.2  # how often a quiet program's stream says it is alive (so that a stop is seen at once)
READ_MAX = 1 << 16
BACKOFF_S = (0.5, 10.0)
TAIL = 10  # the last lines of a copy shown when it is given up  # a restart waits 0.5 s, doubling up to 10 s
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


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the program's process group; SIGKILL to what is left after `grace` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stream_command(
    argv: Sequence[str], index: int = 0, port: int = 0, grace: float = 10.0, env: dict[str, str] | None = None
) -> Iterator[tuple[str, Any]]:
    """Run a program on this worker's partition (a streaming task): yields ("start", where), then ("out" or
    "err", line) for each whole line it prints, ("tick", None) while it is quiet, and ("exit", {"status": …,
    "seconds": …}) last (status negative: killed by that signal). Closing the stream stops the program."""
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
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **extra},
            start_new_session=True,  # its own process group: a stop reaches everything it started
        )
    except OSError as e:
        yield ("start", dict(values, argv=args, pid=0, error=f"{args[0]}: {e.strerror or e}"))
        yield ("exit", dict(status=127, seconds=0.0))
        return
    yield ("start", dict(values, argv=args, pid=proc.pid))
    try:
        sel = selectors.DefaultSelector()
        rest: dict[int, bytes] = {}
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr)):
            assert pipe is not None
            sel.register(pipe.fileno(), selectors.EVENT_READ, name)
            rest[pipe.fileno()] = b""
        while rest:
            events = sel.select(TICK_S)
            if not events:
                yield ("tick", None)
                continue
            for key, _ in events:
                fd = key.fd
                chunk = os.read(fd, READ_MAX)
                if not chunk:  # its end closed: what is left is a last line without a newline
                    if rest[fd]:
                        yield (key.data, rest[fd].decode(errors="replace"))
                    sel.unregister(fd)
                    del rest[fd]
                    continue
                *lines, rest[fd] = (rest[fd] + chunk).split(b"\n")
                for line in lines:
                    yield (key.data, line.decode(errors="replace"))
        status = proc.wait()
        yield ("exit", dict(status=status, seconds=time.monotonic() - started))
    finally:
        _kill_group(proc, grace)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


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
class Job:
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


def parse_job_line(line: str, number: int) -> Job | None:
    """A job file's line: `cmd args…`, optionally led by `[3g.40gb]` or `[min_memory=30GB]`; None for a blank line
    or a comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    job = Job(number, [], line=text)
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


Event = tuple[str, Job, Any]  # ("start" | "out" | "err" | "exit", job, detail)


class Runner:
    """Runs jobs on a pool, each as a streaming task, from `workers` threads that this object owns and joins;
    what they see goes to `events` for one printing thread (lines are never interleaved). `stop()` closes every
    stream: each program gets SIGTERM, then SIGKILL after its grace."""

    def __init__(self, compute: Any, grace: float, retries: int = 0, restart: str = "never", max_restarts: int = 5):
        self.compute = compute
        self.grace = grace
        self.retries = retries
        self.restart = restart
        self.max_restarts = max_restarts
        self.events: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self.threads = Threads(on_error=self._died)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._streams: set[Any] = set()
        self._todo: list[Job] = []
        self.failure: BaseException | None = None

    def _died(self, name: str, e: BaseException) -> None:
        self.failure = e
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            s.close()

    def _task(self, job: Job) -> Task[Any]:
        return Task(
            stream_command,
            (job.argv,),
            dict(index=job.index, port=job.port, grace=self.grace),
            partition=job.partition,
            min_memory=job.min_memory,
        )

    def _once(self, job: Job) -> int | None:
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
                    continue
                self.events.put((kind, job, detail))
        finally:
            with self._lock:
                self._streams.discard(stream)
            stream.close()
            if status is None:  # stopped: it ran until now
                job.seconds += time.monotonic() - began
        return None if self.stopping.is_set() and status is None else status

    def _serve(self, job: Job) -> None:
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

    def _take(self) -> Job | None:
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

    def copies(self, jobs: list[Job], ready_port: bool = False, ready_cmd: Sequence[str] = ()) -> None:
        for job in jobs:
            self.threads.start(f"migpool-run-{job.name}", self._serve, job)
        if ready_port or ready_cmd:
            self.threads.start("migpool-run-ready", self._ready, jobs, ready_cmd)

    @staticmethod
    def _is_ready(job: Job, ready_cmd: Sequence[str]) -> bool:
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

    def _ready(self, jobs: list[Job], ready_cmd: Sequence[str]) -> None:
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

    def queue(self, jobs: list[Job], parallel: int) -> None:
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
                on_event(ev)
        finally:
            self.stop()
            waiter.join()


COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")


class Printer:
    """Every line of every job, whole and prefixed with its name (colored on a terminal); with `log_dir`, also
    one file per job."""

    def __init__(self, out: Any, err: Any, color: bool, log_dir: str | None) -> None:
        self.out, self.err, self.color, self.log_dir = out, err, color, log_dir
        self._logs: dict[str, Any] = {}
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)

    def prefix(self, job: Job) -> str:
        text = f"[{job.name}]"
        if self.color:
            import click

            return click.style(text, fg=COLORS[job.index % len(COLORS)])
        return text

    def line(self, job: Job, stream: str, text: str) -> None:
        (self.err if stream == "err" else self.out).write(f"{self.prefix(job)} {text}\n")
        if self.log_dir:
            log = self._logs.get(job.name)
            if log is None:
                path = os.path.join(self.log_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", job.name) + ".log")
                log = self._logs[job.name] = open(path, "a", encoding="utf-8")  # closed in close()
            log.write(text + "\n")
            log.flush()

    def note(self, job: Job, text: str) -> None:
        self.err.write(f"{self.prefix(job)} {text}\n")

    def close(self) -> None:
        for f in self._logs.values():
            f.close()
        self._logs.clear()


def run(
    compute: Any,
    jobs: list[Job],
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
    on_progress: Callable[[list[Job]], None] | None = None,
) -> tuple[int, list[Job]]:
    """Run the jobs (copies, or a queue over `parallel` partitions) on an open pool, printing their lines; the
    run's exit status (0, or the first failure's) and the jobs. SIGTERM and Ctrl-C stop every program (SIGTERM
    to its process group, SIGKILL after `grace`)."""
    runner = Runner(compute, grace, retries=retries, restart=restart, max_restarts=max_restarts)
    failed_first: list[Job] = []
    stopped_by: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopped_by.append(signum)
        runner.stop()

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
                printer.err.write(f"ready: {name} {url}\n")

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    main = threading.current_thread() is threading.main_thread()
    if main:
        for s in before:
            signal.signal(s, on_signal)
    try:
        if queue_mode:
            runner.queue(jobs, parallel)
        else:
            runner.copies(jobs, ready_port, ready_cmd)
        runner.wait(on_event)
    finally:
        if main:
            for s, h in before.items():
                signal.signal(s, h)
        printer.close()
    if runner.failure is not None:
        raise runner.failure
    if stopped_by:
        return 128 + stopped_by[0], jobs
    final = [j for j in failed_first if j.status not in (0, None)]
    return (exit_code(final[0].status) if final and final[0].status is not None else 0), jobs


def progress_line(jobs: list[Job], started: float) -> str:
    """'12/50 done, 1 failed, about 40s left' for a job queue on a terminal (a failed line waiting for its retry
    counts as failed until it runs again)."""
    done = sum(1 for j in jobs if j.status is not None)
    bad = sum(1 for j in jobs if j.status not in (0, None))
    left = ""
    if 0 < done < len(jobs):
        left = f", about {(time.monotonic() - started) / done * (len(jobs) - done):.0f}s left"
    return f"{done}/{len(jobs)} done, {bad} failed{left}"
