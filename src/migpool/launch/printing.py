"""What `migpool run` prints: each copy's output lines, prefixed and coloured by copy (and kept in a log folder
where asked), and the one progress line of a queue of jobs."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

from .copies import Command
from .stopping import write

COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")


class Printer:
    """Every line of every job, whole and prefixed with its name (colored on a terminal); with `log_dir`, also
    one file per job. A stream whose reader went away (`| head`) is written no more, and `on_closed` is told
    (once for each: "out" or "err")."""

    def __init__(
        self, out: Any, err: Any, color: bool, log_dir: str | None, on_closed: Callable[[str], None] | None = None
    ) -> None:
        self.out, self.err, self.color, self.log_dir = out, err, color, log_dir
        self.on_closed = on_closed
        self.closed: set[str] = set()
        self._logs: dict[str, Any] = {}
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)

    def write(self, which: str, text: str) -> None:
        """`text` on stdout ("out") or stderr ("err"), unless its reader went away."""
        if which in self.closed:
            return
        if not write(self.err if which == "err" else self.out, text):
            self.closed.add(which)
            if self.on_closed is not None:
                self.on_closed(which)

    def prefix(self, job: Command) -> str:
        text = f"[{job.name}]"
        if self.color:
            import click

            return click.style(text, fg=COLORS[job.index % len(COLORS)])
        return text

    def line(self, job: Command, stream: str, text: str) -> None:
        self.write("err" if stream == "err" else "out", f"{self.prefix(job)} {text}\n")
        if self.log_dir:
            log = self._logs.get(job.name)
            if log is None:
                path = os.path.join(self.log_dir, re.sub(r"[^A-Za-z0-9_.-]", "_", job.name) + ".log")
                log = self._logs[job.name] = open(path, "a", encoding="utf-8")  # closed in close()
            log.write(text + "\n")
            log.flush()

    def note(self, job: Command, text: str) -> None:
        self.write("err", f"{self.prefix(job)} {text}\n")

    def close(self) -> None:
        for f in self._logs.values():
            f.close()
        self._logs.clear()


def progress_line(jobs: list[Command], started: float) -> str:
    """'12/50 done, 1 failed, about 40s left' for a job queue on a terminal (a failed line waiting for its retry
    counts as failed until it runs again)."""
    done = sum(1 for j in jobs if j.status is not None)
    bad = sum(1 for j in jobs if j.status not in (0, None))
    left = ""
    if 0 < done < len(jobs):
        left = f", about {(time.monotonic() - started) / done * (len(jobs) - done):.0f}s left"
    return f"{done}/{len(jobs)} done, {bad} failed{left}"
