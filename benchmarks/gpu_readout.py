"""Every device counter NVML gives on this machine's GPU 0, idle and under a bf16 matrix-product load, and what one
sampling pass of every GPU costs (real GPU; read-only: nothing is changed). Its output is kept in docs/hardware/.

    MIGPOOL_READ_ONLY=1 python benchmarks/gpu_readout.py [--passes 20] [--load-seconds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from migpool import NvmlBackend
from migpool.backend.base import HEALTH_FIELDS
from migpool.observe.exporter import Scrapes
from migpool.observe.telemetry import Sampler, sample

LOAD = (
    "import time, torch; a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16); b = a.clone(); "
    "end = time.monotonic() + {s}; print('ready', flush=True)\n"
    "while time.monotonic() < end:\n    [a @ b for _ in range(10)]; torch.cuda.synchronize()"
)


def _show(value: object) -> str:
    return "n/a" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--load-seconds", type=float, default=15.0)
    a = ap.parse_args()
    nv = NvmlBackend()
    g = nv.gpus()[0]
    print(f"{g.name}, {g.memory_mib} MiB, bus {g.pci_bus_id}, driver {nv.driver_version()}, MIG {g.mig_mode}")
    sample(nv)
    times = []
    for _ in range(a.passes):
        t = time.perf_counter()
        sample(nv)
        times.append(time.perf_counter() - t)
    print(
        f"one sampling pass of every GPU ({len(nv.gpus())}): median {statistics.median(times) * 1e3:.2f} ms, "
        f"min {min(times) * 1e3:.2f}, max {max(times) * 1e3:.2f} (over {a.passes})"
    )
    t = time.perf_counter()
    health = nv.health(0)
    print(f"the device counters alone (Backend.health): {(time.perf_counter() - t) * 1e3:.2f} ms")
    with Sampler(nv, interval=0.5) as sampler:
        sampler.latest(wait=3)
        idle = sampler.latest(wait=3).gpus[0]
        load = subprocess.Popen(
            [sys.executable, "-c", LOAD.format(s=a.load_seconds)], stdout=subprocess.PIPE, text=True
        )
        assert load.stdout is not None and load.stdout.readline().strip() == "ready"
        time.sleep(3.0)
        sampler.latest(wait=3)  # (a window that may reach back before the load)
        busy = sampler.latest(wait=3).gpus[0]
        scrapes = Scrapes(sampler)
        t = time.perf_counter()
        body = scrapes.body()
        scrape = time.perf_counter() - t
        load.wait()
    health = busy.health
    print(f"\n{'counter':<28}{'idle':>14}{'bf16 load':>14}")
    for f in HEALTH_FIELDS:
        print(f"{f:<28}{_show(getattr(idle.health, f)):>14}{_show(getattr(health, f)):>14}")
    for f in ("sm_active", "sm_occupancy", "tensor_active", "dram_active", "graphics_active"):
        before = getattr(idle.activity, f) if idle.activity else None
        during = getattr(busy.activity, f) if busy.activity else None
        print(f"GPM {f + ' %':<24}{_show(before):>14}{_show(during):>14}")
    print("not read here:", dict(health.missing) or "none")
    lines = body.count(b"\n")
    print(f"exporter: {lines} lines, first scrape of a snapshot {scrape * 1e3:.2f} ms")
    nv.close()


if __name__ == "__main__":
    main()
