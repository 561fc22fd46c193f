"""Does sampling slow the GPU? bf16 matrix-product throughput on GPU 0 with no sampler (baseline) and with
migpool's sampler reading NVML (memory, processes, GPM) every 1 s and every 0.1 s, in the same run.
Needs a real NVIDIA GPU and PyTorch; read-only (run it with MIGPOOL_READ_ONLY=1).

    python benchmarks/gpu_sampling.py
"""

from __future__ import annotations

import statistics
import time

import torch

from migpool import NvmlBackend
from migpool.observe.telemetry import Sampler


def throughput(seconds: float = 6.0, size: int = 8192) -> float:
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        n += 20
    return n * 2 * size**3 / (time.perf_counter() - t0) / 1e12


def main() -> None:
    base = throughput()
    rows = [("no sampler (baseline)", base, None)]
    for interval in (1.0, 0.1):
        nv = NvmlBackend()
        with Sampler(nv, interval=interval) as s:
            tf = throughput()
            costs = [s.latest().sample_seconds]
        nv.close()
        rows.append((f"sampler every {interval:g} s", tf, statistics.median(costs)))
    base2 = throughput()
    print(f"{torch.cuda.get_device_name(0)}, bf16 8192³ products, 6 s each")
    for name, tf, cost in rows:
        extra = f", one reading {cost * 1e3:.2f} ms" if cost is not None else ""
        print(f"  {name:<24} {tf:7.1f} TFLOP/s  ×{tf / base:.3f} of baseline{extra}")
    print(f"  baseline again           {base2:7.1f} TFLOP/s  (run-to-run spread ×{base2 / base:.3f})")


if __name__ == "__main__":
    main()
