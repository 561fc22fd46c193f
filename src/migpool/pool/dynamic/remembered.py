"""Run times that dynamic MIG learned (sizing.py), kept from one pool to the next.

One JSON file ($MIGPOOL_CACHE_DIR, else the user cache dir: run-times.json) holds, per GPU model, function
(sizing.function_name) and memory need, the seconds per task on each profile measured so far. A pool loads the
figures for its GPU model when it starts and writes back what it learned when it closes; the file is updated under
a lock and replaced whole, so pools closing at once lose nothing and a reader never sees half a file. A file that
cannot be read is ignored (a warning says so) and replaced at the next save: never a reason for a pool to fail.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from platformdirs import user_cache_dir

from ...host.locks import PathLock
from ...host.safefiles import atomic_write
from .sizing import Named

log = logging.getLogger("migpool.dynamic")
CACHE_DIR_ENV = "MIGPOOL_CACHE_DIR"
KEPT = 2000  # entries kept in the file, the most recently updated


def default_path() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or user_cache_dir("migpool")) / "run-times.json"


_warned: set[str] = set()  # damaged files already reported


def _entries(path: Path) -> list[dict]:
    try:
        raw = json.loads(path.read_text())
        return [
            dict(
                gpu=str(e["gpu"]),
                function=str(e["function"]),
                need_mib=float(e["need_mib"]),
                seconds={str(k): float(v) for k, v in e["seconds"].items()},
                updated=float(e.get("updated", 0)),
            )
            for e in raw["entries"]
        ]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        if str(path) not in _warned:  # only a cache: replaced by the next save, said once
            _warned.add(str(path))
            log.warning("ignoring the learned run times in %s, which cannot be read (%s); starting from none", path, e)
        return []


def load(path: Path, gpu: str) -> Named:
    """The figures learned on GPU model `gpu` (its NVML name)."""
    return {(e["function"], e["need_mib"]): e["seconds"] for e in _entries(path) if e["gpu"] == gpu}


def save(path: Path, gpu: str, figures: Named) -> None:
    """Merge `figures` (learned on GPU model `gpu`) into the file; a failure is a warning, not an error."""
    if not figures:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = PathLock(str(path) + ".lock")
        lock.acquire(timeout=10)
        try:
            now = time.time()
            mine = {(gpu, name, need) for name, need in figures}
            kept = [e for e in _entries(path) if (e["gpu"], e["function"], e["need_mib"]) not in mine]
            kept += [
                dict(gpu=gpu, function=name, need_mib=need, seconds=seconds, updated=now)
                for (name, need), seconds in figures.items()
            ]
            kept = sorted(kept, key=lambda e: e["updated"])[-KEPT:]
            about = "run times that migpool's dynamic MIG learned; safe to delete"
            atomic_write(path, json.dumps({"about": about, "entries": kept}, indent=1), sync=False)
        finally:
            lock.release()
    except Exception as e:  # noqa: BLE001 - learning is an aid: never fail a pool's close over it
        log.warning("could not keep the learned run times in %s: %s", path, e)
