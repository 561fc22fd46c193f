"""Warm spares (issue 47) on the CPU: a generated module takes --import-s seconds (2.5) to import in a pool's
processes, and each figure is the time from a task's submit (or its worker's kill) until the task starts, with a
warm spare (the module preloaded, docs/guides/warm.md) beside a fresh process, measured in the same run (ratio
warm / fresh, lower is better; the issue's goal: warm <= 1 s p50 on 2 cores).

- new partition: dynamic MIG on a simulated A100-80GB makes a partition for each task (the last one was freed:
  keep_idle is short), and its worker starts on it;
- killed worker: a pool's one worker is killed with SIGKILL; the clock runs from the kill until the next task
  starts on its replacement.

Then the two ways to hold a process ready, measured bare (no pool): a parked process that waits on a pipe for its
environment (what migpool does) and a forkserver with the module imported (multiprocessing's, with
set_forkserver_preload), each from "the partition is known" to "a process with it runs Python".

    python benchmarks/warm_start.py [--repeat 5] [--import-s 2.5] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import migpool

MODULE = """
import os, time
if "MIGPOOL_NODE_INDEX" in os.environ or "WARM_BENCH_CHILD" in os.environ:  # a pool's process (not the benchmark)
    time.sleep({seconds})

def started(x=None):
    return time.time(), os.getpid()
"""
NAME = "warm_start_slow_module"
PARKED = f"""
import os, sys
os.environ["WARM_BENCH_CHILD"] = "1"
import {NAME}
sys.stdout.write("parked\\n"); sys.stdout.flush()
env = sys.stdin.readline()
os.environ["CUDA_VISIBLE_DEVICES"] = env.strip()
sys.stdout.write("ready\\n"); sys.stdout.flush()
"""
FORKING = f"""
import os, sys
os.environ["WARM_BENCH_CHILD"] = "1"
import {NAME}
sys.stdout.write("parked\\n"); sys.stdout.flush()
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = line.strip()
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
"""


def _wait_parked(c: migpool.Compute, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not [s for s in c.stats()["spares"]["idle"] if s["parked"]]:
        assert time.monotonic() < deadline, "the spare never finished its imports"
        time.sleep(0.02)


def new_partition(spares: int, repeat: int) -> list[float]:
    """Submit -> start of a task that needs a partition dynamic MIG makes for it, `repeat` times."""
    import warm_start_slow_module as slow

    os.environ["MIGPOOL_SPARES"] = str(spares)
    out = []
    with migpool.Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        worker=migpool.Worker(executor="process", preload=(NAME,)),
        plugins=[migpool.plugins.mig(dynamic=True, gpus="all", keep_idle=0.05)],
        progress=False,
    ) as c:
        task = migpool.function(slow.started)
        for _ in range(repeat):
            deadline = time.monotonic() + 60
            while c.partitions:  # the last task's partition is gone: this one needs a new one
                assert time.monotonic() < deadline, "the idle partition was never freed"
                time.sleep(0.02)
            if spares:
                _wait_parked(c)
            t = time.time()
            began, _ = task().on("1g.10gb") >> c
            out.append(began - t)
    return out


def killed_worker(spares: int, repeat: int) -> list[float]:
    """Kill -> start of the next task on the replacement of a pool's one worker, `repeat` times."""
    import warm_start_slow_module as slow

    os.environ["MIGPOOL_SPARES"] = str(spares)
    out = []
    worker = migpool.Worker(concurrency=1, executor="process", preload=(NAME,))
    with migpool.Compute(worker=worker, progress=False) as c:
        task = migpool.function(slow.started)
        _, pid = task() >> c
        for _ in range(repeat):
            if spares:
                _wait_parked(c)
            t = time.time()
            os.kill(pid, signal.SIGKILL)
            while c.worker_pids in ([pid], [0]):  # its death seen, its replacement started or a spare taken
                time.sleep(0.001)
            began, pid = task() >> c
            out.append(began - t)
    return out


def parked_handoff(repeat: int) -> list[float]:
    """A process with the module imported waits on a pipe; the time from writing its environment to its answer."""
    out = []
    for _ in range(repeat):
        p = subprocess.Popen(
            [sys.executable, "-c", PARKED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert p.stdin is not None and p.stdout is not None
        assert p.stdout.readline().strip() == "parked"
        t = time.perf_counter()
        p.stdin.write("MIG-0000\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ready"
        out.append(time.perf_counter() - t)
        p.wait(10)
    return out


def bare_fork(repeat: int) -> list[float]:
    """A fork server with the module imported (os.fork, nothing else): the time from the request to the child's
    answer."""
    p = subprocess.Popen(
        [sys.executable, "-c", FORKING], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert p.stdin is not None and p.stdout is not None
    assert p.stdout.readline().strip() == "parked"
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        p.stdin.write("MIG-0000\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ready"
        out.append(time.perf_counter() - t)
    p.stdin.close()
    p.wait(10)
    return out


def _child(conn: object, device: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    conn.send(time.perf_counter())  # type: ignore[attr-defined]


def forkserver_start(repeat: int) -> list[float]:
    """multiprocessing's forkserver with the module imported: the time from Process.start() to the child running."""
    os.environ["WARM_BENCH_CHILD"] = "1"  # (the forkserver inherits it: it pays the import once)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([NAME])
    out = []
    for i in range(repeat + 1):
        r, w = ctx.Pipe(duplex=False)
        t = time.perf_counter()
        p = ctx.Process(target=_child, args=(w, "MIG-0000"))
        p.start()
        began = r.recv()
        p.join(10)
        if i:  # (the first start also starts the forkserver, which imports the module)
            out.append(began - t)
    del os.environ["WARM_BENCH_CHILD"]
    return out


def _p50(xs: list[float]) -> float:
    return statistics.median(xs)


def _row(what: str, warm: list[float], fresh: list[float]) -> None:
    w, f = _p50(warm), _p50(fresh)
    print(f"{what:<16} {w:>10.3f} {max(warm):>9.3f} {f:>10.3f} {max(fresh):>9.3f} {w / f:>7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--import-s", type=float, default=2.5)
    ap.add_argument("--quick", action="store_true", help="2 repeats of a 0.5 s import (the smoke test's form)")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.import_s = 2, 0.5
    folder = tempfile.mkdtemp(prefix="migpool-warm-")
    Path(folder, f"{NAME}.py").write_text(MODULE.format(seconds=a.import_s))
    sys.path.insert(0, folder)  # (passed on to the pool's processes: PYTHONPATH)
    os.environ["PYTHONPATH"] = os.pathsep.join([folder, *filter(None, [os.environ.get("PYTHONPATH")])])
    print(f"a module that takes {a.import_s} s to import; {a.repeat} runs each; {os.cpu_count()} CPUs")
    print(f"{'submit -> start':<16} {'warm p50':>10} {'warm max':>9} {'fresh p50':>10} {'fresh max':>9} {'ratio':>7}")
    cases: list[tuple[str, Callable[[int, int], list[float]]]] = [
        ("new partition", new_partition),
        ("killed worker", killed_worker),
    ]
    for what, run in cases:
        _row(what, run(1, a.repeat), run(0, a.repeat))
    ways = [("parked", parked_handoff), ("bare fork", bare_fork), ("mp forkserver", forkserver_start)]
    got = {what: run(a.repeat) for what, run in ways}
    print()
    print(f"{'partition known -> process runs':<32} {'p50 (ms)':>10} {'max (ms)':>9}")
    for what, xs in got.items():
        print(f"{what:<32} {_p50(xs) * 1e3:>10.2f} {max(xs) * 1e3:>9.2f}")
    parked = _p50(got["parked"])
    for what in ("bare fork", "mp forkserver"):
        print(f"parked vs {what}: ×{parked / _p50(got[what]):.3f} of its time")


if __name__ == "__main__":
    main()
