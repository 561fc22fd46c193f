"""Payload benchmark: large NumPy arrays as a task's argument and as its result, and one large value stored once
and read by 8 tasks, on migpool beside ProcessPoolExecutor, loky and Ray, measured in the same run, with one
memcpy of the payload (into fresh memory, as a receiver needs) as the floor.

Each case runs in a fresh process (so that peak RSS belongs to that case alone) with a pool of one worker
(two for the stored value). It prints seconds, GB/s, ratios against each baseline and against memcpy, and the
rise of peak RSS in the sender and in the receiver over what each held before the transfer.

    python benchmarks/payload.py [--sizes 1,100,1024] [--repeat 3] [--only migpool,ProcessPoolExecutor]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MiB = 1 << 20
POOLS = ("migpool", "ProcessPoolExecutor", "loky", "Ray")


# --- what the tasks do (module level, so that every pool can import them) ---
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss() -> int:
    return _status("VmRSS")


def peak() -> int:
    return _status("VmHWM")


def array(nbytes: int) -> np.ndarray:
    a = np.empty(nbytes // 8)
    a[:] = 1.5  # every page touched: real memory, as a real payload has
    return a


def receive(a: Any) -> tuple[int, int]:
    """An argument arrived: its size, and this worker's peak RSS so far."""
    value = a if isinstance(a, np.ndarray) else a[0]
    return int(value.nbytes), peak()


def _cache() -> dict[int, np.ndarray]:
    # kept on a module every worker shares (`sys`): pools that send these functions by value give each its own
    # copy of this module's globals
    return sys.__dict__.setdefault("_migpool_payload_benchmark", {})


def hold(nbytes: int) -> int:
    """Make (once) the array that `give` returns; this worker's RSS once it holds it."""
    _cache().setdefault(nbytes, array(nbytes))
    return rss()


def give(nbytes: int) -> np.ndarray:
    return _cache()[nbytes]


def worker_peak() -> int:
    return peak()


def warm() -> None:
    time.sleep(0.3)  # long enough that two calls at once take both workers, each importing this module


def _warm(submit: Callable[..., Any], workers: int) -> None:
    for f in [submit(warm) for _ in range(workers)]:
        f.result()


# --- the pools, each as (submit, close) ---
def open_pool(name: str, workers: int) -> tuple[Callable[..., Any], Callable[[], None], Any]:
    """submit(fn, *args) -> a future-like with .result(); close(); and the pool itself (for put)."""
    if name == "migpool":
        import migpool

        c = migpool.Compute(worker=migpool.Worker(concurrency=workers, executor="process"), progress=False)
        c.__enter__()
        return c.submit, lambda: c.__exit__(None, None, None), c
    if name == "ProcessPoolExecutor":
        from concurrent.futures import ProcessPoolExecutor

        p = ProcessPoolExecutor(workers)
        return p.submit, p.shutdown, p
    if name == "loky":
        from loky import get_reusable_executor

        p = get_reusable_executor(max_workers=workers, reuse=False)
        return p.submit, p.shutdown, p
    import ray

    ray.init(address="local", num_cpus=workers, logging_level="ERROR", include_dashboard=False)
    remote: dict[Any, Any] = {}

    class Done:
        def __init__(self, ref: Any) -> None:
            self.ref = ref

        def result(self) -> Any:
            return ray.get(self.ref)

    def submit(fn: Callable[..., Any], *args: Any) -> Done:
        if fn not in remote:
            remote[fn] = ray.remote(num_cpus=1)(fn)
        return Done(remote[fn].remote(*args))

    return submit, ray.shutdown, ray


def case(pool: str, kind: str, nbytes: int, repeat: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process: best time of `repeat`, and the peak RSS rises."""
    workers = 2 if kind == "put" else 1
    submit, close, handle = open_pool(pool, workers)
    try:
        if kind == "argument":
            a = array(nbytes)
            _warm(submit, workers)
            base_parent, base_worker = rss(), submit(worker_peak).result()
            best = float("inf")
            worker_high = 0
            for _ in range(repeat):
                t = time.perf_counter()
                size, high = submit(receive, a).result()
                best = min(best, time.perf_counter() - t)
                worker_high = max(worker_high, high)
                assert size == nbytes
            return dict(seconds=best, sender=peak() - base_parent, receiver=worker_high - base_worker)
        if kind == "result":
            base_worker = submit(hold, nbytes).result()
            base_parent = rss()
            best = float("inf")
            for _ in range(repeat):
                t = time.perf_counter()
                r = submit(give, nbytes).result()
                assert r.nbytes == nbytes and r[-1] == 1.5
                best = min(best, time.perf_counter() - t)
                del r
            sender = submit(worker_peak).result() - base_worker
            return dict(seconds=best, sender=sender, receiver=peak() - base_parent)
        # put: one value stored once, read by 8 tasks
        a = array(nbytes)
        _warm(submit, workers)
        base_parent = rss()
        t = time.perf_counter()
        if pool == "migpool":
            ref: Any = handle.put(a)
        elif pool == "Ray":
            ref = handle.put(a)
        else:
            ref = a  # no store: each task gets the value as its argument
        futs = [submit(receive, ref if pool == "Ray" else [ref]) for _ in range(8)]  # Ray resolves top-level refs
        sizes = [f.result()[0] for f in futs]
        assert sizes == [nbytes] * 8
        return dict(seconds=time.perf_counter() - t, sender=peak() - base_parent, receiver=0)
    finally:
        close()


def memcpy(nbytes: int, repeat: int) -> tuple[float, float]:
    """One copy of the payload: into fresh memory (what a first transfer pays for its pages), and into memory
    already in place (what a transfer into a warm segment can reach); best of `repeat`."""
    a = array(nbytes)
    fresh = warm = float("inf")
    b = np.empty_like(a)
    for _ in range(repeat):
        t = time.perf_counter()
        c = np.empty_like(a)
        np.copyto(c, a)
        fresh = min(fresh, time.perf_counter() - t)
        del c
        t = time.perf_counter()
        np.copyto(b, a)
        warm = min(warm, time.perf_counter() - t)
    return fresh, warm


def run_case(pool: str, kind: str, nbytes: int, repeat: int) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--case", json.dumps([pool, kind, nbytes, repeat])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        print(f"  {pool} {kind} {nbytes // MiB} MiB failed: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def available(pool: str) -> bool:
    mod = {"loky": "loky", "Ray": "ray"}.get(pool)
    if mod is None:
        return True
    try:
        __import__(mod)
    except ImportError:
        print(f"{pool} not installed: skipping that baseline")
        return False
    return True


def _gb(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,100,1024", help="MiB, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(POOLS))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        print(json.dumps(case(*json.loads(a.case))))
        return
    pools = [p for p in a.only.split(",") if p in POOLS and available(p)]
    sizes = [int(s) * MiB for s in a.sizes.split(",")]
    print(f"{os.cpu_count()} CPUs; best of {a.repeat}; each case in a fresh process")
    print(f"{'case':<24}{'pool':<21}{'seconds':>9}{'GB/s':>7}{'sender':>9}{'receiver':>9}")
    for kind in ("argument", "result", "put"):
        for nbytes in sizes if kind != "put" else sizes[-1:]:
            fresh, warm = memcpy(nbytes, a.repeat)
            label = f"{nbytes // MiB} MiB {kind}" if kind != "put" else f"{nbytes // MiB} MiB put, 8 tasks"
            print(f"{label:<24}{'memcpy, fresh memory':<21}{fresh:>9.3f}{_gb(nbytes, fresh):>7.2f}")
            print(f"{'':<24}{'memcpy, warm memory':<21}{warm:>9.3f}{_gb(nbytes, warm):>7.2f}")
            got: dict[str, dict[str, Any]] = {}
            for pool in pools:
                r = run_case(pool, kind, nbytes, a.repeat)
                if r is None:
                    continue
                got[pool] = r
                print(
                    f"{'':<24}{pool:<21}{r['seconds']:>9.3f}{_gb(nbytes, r['seconds']):>7.2f}"
                    f"{r['sender'] / MiB:>7.0f}Mi{r['receiver'] / MiB:>7.0f}Mi"
                )
            m = got.get("migpool")
            if m is None:
                continue
            ratios = [f"{p} ×{r['seconds'] / m['seconds']:.1f}" for p, r in got.items() if p != "migpool"]
            print(f"{'':<24}migpool's speed-up: " + ", ".join(ratios))
            print(
                f"{'':<24}migpool's time: ×{m['seconds'] / fresh:.2f} of a fresh memcpy's, "
                f"×{m['seconds'] / warm:.2f} of a warm one's"
            )
    print("sender, receiver: rise of peak RSS during the transfer (MiB); GB/s counts one way")


if __name__ == "__main__":
    main()
