"""The workload record: one JSON line per finished task, for `migpool advise`.

A pool (local or Ray, any layout) and `migpool run --jobs` record each task that ends well: what ran, the memory
it asked for, when it arrived, the partition size it ran on and how long it ran. The lines go to workload.jsonl
beside the remembered run times ($MIGPOOL_CACHE_DIR, else the user cache dir); past MAX_BYTES the file is renamed
workload.jsonl.1 (replacing the one before) and a new one begun, so the record holds the last 2 × MAX_BYTES at
most. MIGPOOL_RECORD=0 turns it off. Each line, about a hundred bytes:

    {"fn": "train.step", "need_mib": 10240, "arrival": 1765130000.25, "profile": "2g.20gb", "seconds": 41.5}

fn: the function's module and qualified name, or a command line; need_mib: its min_memory in MiB (null: none
asked); arrival: when it was submitted (Unix seconds); profile: the MIG profile it ran on, or "whole" (a GPU
without MIG, or no GPU); seconds: its run time on the worker. A trace written by hand (`migpool advise --trace`)
may add "also": {profile: seconds}, the same task's run times measured on other sizes.

record() only appends to a list; a writer thread, owned by the process's Recorder and joined when the interpreter
exits, formats and writes the lines once a second has passed with no task ended (or once HELD are waiting), so a
busy pool neither waits on the disk nor shares its interpreter with the formatting; the environment is read again
once a second. A record that cannot be written is dropped with one warning: never a task's failure.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from ..mig.layout import parse_memory_mib

log = logging.getLogger("migpool.observe")
CACHE_DIR_ENV = "MIGPOOL_CACHE_DIR"  # the directory of the remembered run times (pool/dynamic/remembered.py)
RECORD_ENV = "MIGPOOL_RECORD"  # "0": record nothing
FILE = "workload.jsonl"
MAX_BYTES = 4 << 20  # one file's cap before it rotates
HELD = 20_000  # records held before the writer writes them even while tasks keep ending
FLUSH_S = 1.0  # how often the writer looks: it writes once a second passed with no task ended (or HELD)
RECHECK_S = 1.0  # how often a task's end reads the environment again
WHOLE = "whole"
SKIPPED = {"migpool.launch.copies.stream_command"}  # `migpool run`'s task: recorded by launch, as its command
SKIPPED_JSON = {json.dumps(name) for name in SKIPPED}


def default_path() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or user_cache_dir("migpool")) / FILE


def enabled() -> bool:
    return os.environ.get(RECORD_ENV, "1").strip() != "0"


def task_name(fn: Any) -> str:
    """What ran: a command line as given (a list of arguments joined by spaces), else the function's module and
    qualified name (a RemoteFunction by the function it wraps)."""
    if isinstance(fn, str):
        return fn
    if isinstance(fn, (list, tuple)):
        return " ".join(map(str, fn))
    inner = getattr(fn, "fn", fn)
    return f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', type(inner).__name__)}"


def profile_of(where: Any) -> str:
    """A partition (its .profile), a profile name, or anything else (None, a GPU's UUID): a whole GPU."""
    name = where if isinstance(where, str) else getattr(where, "profile", None)
    if isinstance(name, str) and "g." in name:
        return name
    return WHOLE


class Recorder:
    """Buffers records and writes them from its own thread to `path`, rotating it past `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.buffer: collections.deque[tuple[Any, ...]] = collections.deque()
        self.wake = threading.Event()
        self.stopping = False
        self.warned = False
        # what ran -> its name as JSON, held weakly (a closure's or a batch's data is not kept for the record)
        self.names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.thread = threading.Thread(target=self.loop, name="migpool-workload-record", daemon=True)
        self.thread.start()

    def add(self, item: tuple[Any, ...]) -> None:
        self.buffer.append(item)
        if self.stopping:  # (closed as this was added: written here, not lost)
            self.flush()
        elif len(self.buffer) >= HELD:
            self.wake.set()

    def loop(self) -> None:
        seen = 0
        while not self.stopping:
            self.wake.wait(FLUSH_S)
            self.wake.clear()
            if len(self.buffer) in (seen, 0) or len(self.buffer) >= HELD:  # quiet for a second, or full
                self.flush()
            seen = len(self.buffer)
        self.flush()

    def flush(self) -> None:
        lines = []
        while self.buffer:
            fn, need, arrival, profile, seconds = self.buffer.popleft()
            name = self.name_of(fn)
            if name in SKIPPED_JSON:
                continue
            if isinstance(need, str):
                need = parse_memory_mib(need)
            lines.append(
                f'{{"fn": {name}, "need_mib": {"null" if need is None else float(need)}, '
                f'"arrival": {arrival:.3f}, "profile": "{profile}", "seconds": {seconds:.4f}}}\n'
            )
        if lines:
            self.write(lines)

    def name_of(self, fn: Any) -> str:
        try:
            return self.names[fn]
        except KeyError:
            name = self.names[fn] = json.dumps(task_name(fn))
            return name
        except TypeError:  # (not weakly referable, or unhashable: a command's argument list)
            return json.dumps(task_name(fn))

    def write(self, lines: list[str]) -> None:
        """Append `lines`, rotating the file whenever the next line would take it past max_bytes."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            while lines:
                room, take = self.max_bytes - size, 0
                while take < len(lines) and len(lines[take]) <= room:
                    room -= len(lines[take])
                    take += 1
                if take == 0:  # full: the file becomes the old one, a new one begins
                    if size:
                        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                        size = 0
                        continue
                    take = 1  # one line longer than the cap: kept alone
                text = "".join(lines[:take]).encode()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, text)
                finally:
                    os.close(fd)
                size += len(text)
                del lines[:take]
        except OSError as e:
            if not self.warned:
                self.warned = True
                log.warning("could not write the workload record %s (%s); `migpool advise` will lack it", self.path, e)

    def close(self) -> None:
        """Write what is buffered and end the thread."""
        self.stopping = True
        self.wake.set()
        self.thread.join()


_lock = threading.Lock()
_recorders: dict[Path, Recorder] = {}
_latest: tuple[float, Recorder | None] | None = None  # (when the environment was read, the recorder it names)


def recorder(path: Path | None = None) -> Recorder:
    """The process's recorder for `path` (default_path()), started at its first use."""
    path = path or default_path()
    with _lock:
        got = _recorders.get(path)
        if got is None:
            got = _recorders[path] = Recorder(path)
        return got


def close_all() -> None:
    """Write every buffered record and end the writer threads (at exit; tests call it to read the file)."""
    global _latest
    with _lock:
        closing = list(_recorders.values())
        _recorders.clear()
        _latest = None
    for r in closing:
        r.close()


def _forget_in_child() -> None:
    global _latest
    _latest = None
    _recorders.clear()  # a forked child has no writer threads: it starts its own, its parent's buffer is not its


atexit.register(close_all)
os.register_at_fork(after_in_child=_forget_in_child)


def record_task(
    fn: Any, need: float | str | None, submitted: float, where: Any, seconds: float, ok: bool = True
) -> None:
    """A task ended (well, unless `ok` is false: then nothing is recorded): `fn` (a function, a RemoteFunction or
    a command line), its memory need (MiB, or min_memory's text), `submitted` (time.monotonic() when it was
    submitted), `where` it ran (a partition, a profile name, or None: a whole GPU) and its run time. Costs an
    append; the writer thread does the rest. The environment ($MIGPOOL_RECORD, $MIGPOOL_CACHE_DIR) is read again
    at most once a second."""
    global _latest
    if not ok:
        return
    now = time.monotonic()
    latest = _latest
    if latest is None or now - latest[0] > RECHECK_S or (latest[1] is not None and latest[1].stopping):
        latest = _latest = (now, recorder() if enabled() else None)
    if latest[1] is not None:
        latest[1].add((fn, need, time.time() - (now - submitted), profile_of(where), seconds))


def paths(path: Path | None = None) -> list[Path]:
    """The record's files, oldest first."""
    path = path or default_path()
    return [p for p in (path.with_name(path.name + ".1"), path) if p.exists()]


def read(files: Sequence[Path], on_bad: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """The records of `files` in order, each checked; a line that is not a record is skipped (`on_bad` is told
    where)."""
    for f in files:
        with open(f, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                    need = e.get("need_mib")
                    row: dict[str, Any] = dict(
                        fn=str(e["fn"]),
                        need_mib=None if need is None else float(need),
                        arrival=float(e["arrival"]),
                        profile=str(e["profile"]),
                        seconds=float(e["seconds"]),
                    )
                    if "also" in e:
                        row["also"] = {str(k): float(v) for k, v in e["also"].items()}
                    yield row
                except (ValueError, KeyError, TypeError, AttributeError):
                    if on_bad is not None:
                        on_bad(f"{f}:{number}")
