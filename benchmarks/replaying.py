"""What the trace benchmarks (dynamic.py, miso.py) share for their real runs: a pool on simulated GPUs in a state
directory of its own, and a trace submitted at its arrival times in scaled time."""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import migpool as sky


def simulated_pool(spec: str, plugin: sky.plugins.Plugin, concurrency: int | None = None) -> sky.Compute:
    """A pool of process workers on the simulated GPUs `spec` (`A100-40GB:2`), with `plugin`, in a fresh state
    directory (nothing of an earlier run is in its way)."""
    os.environ["MIGPOOL_STATE_DIR"] = tempfile.mkdtemp()
    return sky.Compute(
        provider=sky.Local(simulate=spec),
        progress=False,
        plugins=[plugin],
        worker=sky.Worker(concurrency=concurrency, executor="process"),
    )


def replay(
    compute: sky.Compute, arrivals: Sequence[float], make: Callable[[int], sky.Task], scale: float
) -> list[tuple[float, Any]]:
    """Submit task `make(k)` at `arrivals[k]` (trace seconds; `scale` of them pass per wall-clock second); for each,
    when it ended (trace seconds from the start) and its result, once all have ended."""
    ends = [math.nan] * len(arrivals)
    ended = threading.Semaphore(0)  # a future's waiters wake before its callbacks run: count the callbacks

    def end(k: int) -> None:
        ends[k] = (time.monotonic() - start) * scale
        ended.release()

    start = time.monotonic()
    futs = []
    for k, at in enumerate(arrivals):
        delay = at / scale - (time.monotonic() - start)
        if delay > 0:
            time.sleep(delay)
        fut = compute.submit(make(k))
        fut.add_done_callback(lambda f, k=k: end(k))
        futs.append(fut)
    for _ in futs:
        ended.acquire()
    return [(at, f.result()) for at, f in zip(ends, futs, strict=True)]
