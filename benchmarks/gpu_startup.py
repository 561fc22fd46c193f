"""GPU start-up benchmark: time from entering `Compute` until every worker has initialised CUDA and answered,
for 1, 2 and 4 workers, beside starting as many plain `python -c "import torch; torch.cuda.init()"` processes
in the same run (ratio migpool / plain, lower is better). Workers are pinned to GPU 0 by UUID (no MIG change).

    MIGPOOL_READ_ONLY=1 python benchmarks/gpu_startup.py [--repeat 3]
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
