"""GPU start-up benchmark: time from entering `Compute` until every worker has initialised CUDA and answered,
for 1, 2 and 4 workers, beside starting as many plain `python -c "import torch; torch.cuda.init()"` processes
in the same run (ratio migpool / plain, lower is better). Workers are pinned to GPU 0 by UUID (no MIG change).

Then "partition known -> CUDA-ready" (issue 47): a pool's one worker is killed, and the time from the kill (the
worker's partition is known: it is the same one) until a task on its replacement has initialised CUDA and made a
tensor, with a warm spare (torch preloaded, docs/guides/warm.md) beside a fresh process, in the same run (ratio
warm / fresh, lower is better; the issue's goal: warm <= 0.5 s).

With --new-partition, instead: "a task needs a new partition -> its first kernel runs" (issue 47's goal: <= 1 s p50
with a warm spare). The MIG side is modelled: a GPU instance and its compute instance are not made (the GPU's MIG
mode stays as it is, disabled on the lent H100), a sleep of --create-ms stands for their creation (by default the
simulated backend's 92 ms, HARDWARE_LATENCY: about the middle of the 52-132 ms published for an A100). Then the
partition is known: the pool's one worker (on GPU 0, by UUID) is killed, and the worker the pool starts in its
place, as it starts one for a new partition, is handed the partition's environment; a task on it makes a tensor on
the GPU (CUDA's initialisation and a first kernel, waited for). The clock runs from before the sleep until that
kernel has finished, timed inside the task; the worker's death being noticed is in it too, which a real new
partition does not pay. p50 and max over --runs runs, a warm spare (torch preloaded) beside a fresh process, in the
same run.

Read-only: MIGPOOL_READ_ONLY=1 is set here whatever the environment says (migpool then refuses every driver call
that would change a GPU), and nothing in this benchmark asks for one. Without torch or a CUDA GPU it says so in one
line and exits 0.

    MIGPOOL_READ_ONLY=1 python benchmarks/gpu_startup.py [--repeat 3]
    MIGPOOL_READ_ONLY=1 python benchmarks/gpu_startup.py --new-partition [--runs 5] [--create-ms 92]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

os.environ["MIGPOOL_READ_ONLY"] = "1"  # (before migpool is imported: it only ever reads the GPU here)

import migpool
from migpool.backend.simulated import HARDWARE_LATENCY

PLAIN = "import torch; torch.cuda.init(); torch.zeros(1, device='cuda')"


@migpool.function
def cuda_ready() -> int:
    import os

    import torch

    torch.cuda.init()
    torch.zeros(1, device="cuda")
    return os.getpid()


@migpool.function
def first_kernel() -> tuple[int, float]:
    """This worker's pid and the time its first CUDA kernel had finished."""
    import os
    import time

    import torch

    torch.zeros(1, device="cuda").add_(1)
    torch.cuda.synchronize()
    return os.getpid(), time.time()


def gpu_missing() -> str | None:
    """Why this benchmark cannot run here (no torch, no CUDA GPU), asked of a child process (this one stays free
    of CUDA); None where it can."""
    code = "import torch; print(torch.cuda.device_count())"
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "asking torch for the CUDA devices took over 300 s"
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        return last.partition(": ")[2] or last  # ("ModuleNotFoundError: No module named 'torch'": its message)
    if p.stdout.strip() in ("", "0"):
        return "torch sees no CUDA device"
    return None


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


def new_partition(spares: int, runs: int, create_s: float) -> list[float]:
    """Seconds from "a task needs a new partition" until its first kernel has run, `runs` times (module docstring)."""
    os.environ["MIGPOOL_SPARES"] = str(spares)
    worker = migpool.Worker(concurrency=1, executor="process", preload=("torch",))
    out = []
    with migpool.Compute(worker=worker, plugins=[migpool.plugins.gpus([0])], progress=False) as c:
        pid, _ = first_kernel() >> c
        for i in range(runs):
            deadline = time.monotonic() + 300
            while spares and not [s for s in c.stats()["spares"]["idle"] if s["parked"]]:
                assert time.monotonic() < deadline, "the spare never finished importing torch"
                time.sleep(0.05)
            t = time.time()  # a task needs a new partition
            time.sleep(create_s)  # its GPU instance and compute instance are made (modelled)
            os.kill(pid, signal.SIGKILL)  # the partition is known: the pool starts a worker for it
            while c.worker_pids in ([pid], [0]):
                time.sleep(0.001)
            again, ran = first_kernel() >> c
            out.append(ran - t)
            used = c.stats().get("spares", {}).get("used", 0)
            assert again != pid and used == (i + 1 if spares else 0), "the worker must be the spare exactly when kept"
            pid = again
    return out


def new_partition_main(runs: int, create_ms: float) -> None:
    print("a task needs a new partition -> its first kernel runs")
    print(f"(GPU instance create modelled: {create_ms:.0f} ms; GPU 0 by UUID, read-only; {runs} runs each)")
    warm = new_partition(1, runs, create_ms / 1e3)
    fresh = new_partition(0, runs, create_ms / 1e3)
    print(f"{'':<14} {'p50 (s)':>8} {'max (s)':>8}")
    for what, xs in (("warm spare", warm), ("fresh process", fresh)):
        print(f"{what:<14} {statistics.median(xs):>8.2f} {max(xs):>8.2f}")
    w, f = statistics.median(warm), statistics.median(fresh)
    print(f"ratio warm / fresh p50: {w / f:.2f}; goal warm p50 <= 1 s: {'met' if w <= 1.0 else 'not met'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--new-partition", action="store_true", help="a task needs a new partition -> first kernel")
    ap.add_argument("--runs", type=int, default=5, help="runs of --new-partition, each way")
    create_ms = HARDWARE_LATENCY["create_gpu_instance"] * 1e3
    ap.add_argument("--create-ms", type=float, default=create_ms, help="the GPU instance create modelled (ms)")
    a = ap.parse_args()
    missing = gpu_missing()
    if missing is not None:
        print(f"gpu_startup: nothing measured, no GPU here: {missing}"[:80])
        return
    if a.new_partition:
        new_partition_main(a.runs, a.create_ms)
        return
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
