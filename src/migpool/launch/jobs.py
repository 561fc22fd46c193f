"""`migpool run`'s jobs and the pool they run on: the lines of a job file, or one copy of a command per partition,
run on a pool opened for them (`Compute` with the plugin the command line chose) and closed when they end."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ..backend import open_backend
from ..pool.api.providers import Local, Worker
from ..pool.compute import Compute
from .copies import Command, free_ports, parse_job_line, run
from .printing import Printer, progress_line
from .stopping import Stop


def read_job_file(text: str) -> list[Command]:
    """The commands of a job file, each named after its line (`job3`: the third line); blank lines and comments
    are skipped."""
    jobs = []
    for number, line in enumerate(text.splitlines()):
        job = parse_job_line(line, number)
        if job is not None:
            job.name = f"job{number + 1}"
            jobs.append(job)
    return jobs


def whole_gpus(provider: Local, gpus: int | list[int] | str) -> list[int]:
    """The GPUs a run on whole GPUs takes: every GPU of the machine for 'all', else those of `gpus` it has."""
    backend = open_backend(provider.spec())
    try:
        found = [g.index for g in backend.gpus()]
    finally:
        backend.close()
    return found if gpus == "all" else [i for i in ([gpus] if isinstance(gpus, int) else gpus) if i in found]


def copies(pool: Any, command: Sequence[str], *, whole_gpu: bool, pinned: bool, port_base: int) -> list[Command]:
    """One copy of `command` per worker of the pool: named `gpu#N` on whole GPUs, else after the partition's
    profile (`1g.10gb#3`), kept to that profile when `pinned`; with a {port} in the command, each gets a free
    port from `port_base` up."""
    if whole_gpu:
        names = [f"gpu#{i}" for i in range(len(pool.worker_pids))]
        profiles: list[str | None] = [None] * len(names)
    else:
        profiles = [p.profile for p in pool.partitions]
        names = [f"{p}#{i}" for i, p in enumerate(profiles)]
    ports = free_ports(len(names), port_base) if any("{port}" in a for a in command) else []
    return [
        Command(i, list(command), name=name, partition=profiles[i] if pinned else None, port=ports[i] if ports else 0)
        for i, name in enumerate(names)
    ]


@dataclasses.dataclass(frozen=True)
class How:
    """How the jobs run (what `migpool run`'s options say): one copy per partition, on whole GPUs or pinned to
    their profiles, or a queue `parallel` wide (None: one job per worker); restarts, retries, readiness checks,
    the stop's grace, ports, colors and log files."""

    whole_gpu: bool = False
    pinned: bool = False
    parallel: int | None = None
    grace: float = 10.0
    retries: int = 0
    restart: str = "never"
    max_restarts: int = 5
    ready_port: bool = False
    ready_cmd: tuple[str, ...] = ()
    port_base: int = 8000
    color: bool = False
    log_dir: str | None = None


def run_on_pool(
    provider: Local,
    plugin: Any,
    workers: int | None,
    jobs: list[Command],
    command: Sequence[str],
    how: How,
    out: TextIO,
    err: TextIO,
    show_progress: Callable[[str], None] | None = None,
    stop: Stop | None = None,
) -> tuple[int, list[Command]]:
    """Open a pool of `workers` workers (None: one per partition the plugin makes), run `jobs` on it as a queue,
    or, given none, one copy of `command` per partition, printing their lines to `out` and `err`; then close the
    pool. Returns the run's exit status and the jobs. `show_progress` gets a line each time a queued job ends;
    `stop` owns the signals (see copies.run)."""
    queue_mode = bool(jobs)
    with Compute(provider=provider, worker=Worker(concurrency=workers), plugins=[plugin], progress=False) as pool:
        if not queue_mode:
            jobs = copies(pool, command, whole_gpu=how.whole_gpu, pinned=how.pinned, port_base=how.port_base)
        printer = Printer(out, err, how.color, how.log_dir)
        started = time.monotonic()

        def progress(all_jobs: list[Command]) -> None:
            if queue_mode and show_progress is not None:
                show_progress(progress_line(all_jobs, started))

        return run(
            pool,
            jobs,
            queue_mode=queue_mode,
            parallel=how.parallel or len(pool.worker_pids),
            printer=printer,
            grace=how.grace,
            retries=how.retries,
            restart=how.restart,
            max_restarts=how.max_restarts,
            ready_port=how.ready_port,
            ready_cmd=how.ready_cmd,
            on_progress=progress,
            stop=stop,
        )
