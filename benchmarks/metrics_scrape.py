"""Scrape cost of `migpool metrics` on 8 simulated A100-80GB GPUs × 7 partitions (goal: under 20 ms).

migpool's exporter serves the sampler's cached snapshot; the baseline is an exporter that reads every GPU
at each scrape (what a naive exporter does), measured in the same run. Prints the median of 50 scrapes and the
ratio migpool / baseline (lower is better).

    python benchmarks/metrics_scrape.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from prometheus_client import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from migpool import SimulatedBackend, reconcile
from migpool.exporter import families, registry_for
from migpool.telemetry import Sampler, sample


class ReadAtScrape(Collector):
    def __init__(self, backend):
        self.backend = backend

    def collect(self):
        yield from families(sample(self.backend))


def timed(registry, n=50):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        generate_latest(registry)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    os.environ["MIGPOOL_STATE_DIR"] = tempfile.mkdtemp()
    sim = SimulatedBackend("A100-80GB:8")
    reconcile.apply({"1g.10gb": 7}, sim)
    with Sampler(sim, interval=1.0) as sampler:
        cached = timed(registry_for(sampler))
        read_s = sampler.latest().sample_seconds
    baseline = CollectorRegistry(auto_describe=False)
    baseline.register(ReadAtScrape(sim))
    naive = timed(baseline, n=10)
    print("8 simulated GPUs × 7 partitions (56 MIG devices)")
    print(
        f"  migpool (cached snapshot): {cached * 1e3:7.2f} ms per scrape   "
        f"goal < 20 ms: {'met' if cached < 0.02 else 'MISSED'}"
    )
    print(f"  baseline (read at scrape): {naive * 1e3:7.2f} ms per scrape")
    print(f"  ratio migpool / baseline:  ×{cached / naive:.3f}")
    print(f"  one background reading of every GPU took {read_s * 1e3:.1f} ms (off the scrape path)")


if __name__ == "__main__":
    main()
