"""GPU start-up benchmark: time from entering `Compute` until every worker has initialised CUDA and answered,
for 1, 2 and 4 workers, beside starting as many plain `python -c "import torch; torch.cuda.init()"` processes
in the same run (ratio migpool / plain, lower is better). Workers are pinned to GPU 0 by UUID (no MIG change).

Then "partition known -> CUDA-ready" (issue 47): a pool's one worker is killed, and the time from the kill (the
worker's partition is known: it is the same one) until a task on its replacement has initialised CUDA and made a
tensor, with a warm spare (torch preloaded, docs/guides/warm.md) beside a fresh process, in the same run (ratio
warm / fresh, lower is better; the issue's goal: warm <= 0.5 s).

    MIGPOOL_READ_ONLY=1 python benchmarks/gpu_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import migpool

PLAIN = "import torch; torch.cuda.init(); torch.zeros(1, device='cuda')"


@migpool.function
def cuda_ready() -> int:
    import os

    import torch

    torch.cuda.init()
    torch.zeros(1, device="cuda")
    return os.getpid()


def pool_startup(n: int) -> float:
    t = time.perf_counter()
    with migpool.Compute(
        worker=migpool.Worker(concurrency=n, executor="process"), plugins=[migpool.plugins.gpus([0])], progress=False
    ) as c:
        pids = migpool.gather(*[cuda_ready() for _ in range(n)]) >> c
        elapsed = time.perf_counter() - t
    assert len(set(pids)) == n, "each worker must answer once"
    return elapsed


def plain_startup(n: int) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", PLAIN]) for _ in range(n)]
    assert all(p.wait() == 0 for p in procs)
    return time.perf_counter() - t


def restart_ready(spares: int) -> float:
    """Seconds from killing the pool's worker until its replacement has answered a CUDA task."""
    os.environ["MIGPOOL_SPARES"] = str(spares)
    worker = migpool.Worker(concurrency=1, executor="process", preload=("torch",))
    with migpool.Compute(worker=worker, plugins=[migpool.plugins.gpus([0])], progress=False) as c:
        first = cuda_ready() >> c
        deadline = time.monotonic() + 120
        while spares and not [s for s in c.stats()["spares"]["idle"] if s["parked"]]:  # the spare has its imports
            assert time.monotonic() < deadline, "the spare never finished importing torch"
            time.sleep(0.05)
        t = time.perf_counter()
        os.kill(first, signal.SIGKILL)
        while c.worker_pids in ([first], [0]):  # its death seen, its replacement started (or a spare taken)
            time.sleep(0.001)
        again = cuda_ready() >> c
        elapsed = time.perf_counter() - t
        used = c.stats().get("spares", {}).get("used", 0)
    assert again != first and used == (1 if spares else 0), "the replacement must be the spare exactly when kept"
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(f"{'workers':>7} {'migpool (s)':>12} {'plain python (s)':>17} {'ratio':>7}")
    for n in (1, 2, 4):
        mp, pl = [], []
        for _ in range(a.repeat):  # interleaved, median of each
            mp.append(pool_startup(n))
            pl.append(plain_startup(n))
        m, p = statistics.median(mp), statistics.median(pl)
        print(f"{n:>7} {m:>12.2f} {p:>17.2f} {m / p:>7.2f}")
    print()
    print("partition known -> CUDA-ready (a worker killed, its replacement answers a CUDA task)")
    print(f"{'warm spare (s)':>14} {'fresh process (s)':>18} {'ratio':>7}")
    warm, fresh = [], []
    for _ in range(a.repeat):  # interleaved, median of each
        warm.append(restart_ready(1))
        fresh.append(restart_ready(0))
    w, f = statistics.median(warm), statistics.median(fresh)
    print(f"{w:>14.2f} {f:>18.2f} {w / f:>7.2f}")


if __name__ == "__main__":
    main()
