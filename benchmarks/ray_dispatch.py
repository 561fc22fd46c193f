"""migpool on Ray vs plain Ray, on one local Ray cluster (a head and one 2-CPU node), in the same run:

  - tiny-task throughput (10,000 tasks) and median round trip of one task, 2 worker processes each:
    migpool's pool of 2 actors vs `@ray.remote` tasks (num_cpus=1, so 2 run at once);
  - start-up: `Compute` entry until every actor is ready (node probe, plugin checks and bootstrap included)
    vs creating the same 2 actors by hand and waiting for them, both from an idle cluster, in alternating order.

Goals: throughput ≥ 1.0×, latency ≤ 1.2×, start-up ≤ 1.5× of plain Ray.

    python benchmarks/ray_dispatch.py [--quick]    (--quick: 200 tasks, one run of each: a smoke test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import ray
from ray.cluster_utils import Cluster

import migpool
from migpool.pool.api.providers import WorkerSpec
from migpool.pool.raypool.actor import WorkerActor
from migpool.pool.raypool.nodes import node_affinity


@migpool.function
def tiny(x: int) -> int:
    return x + 1


def plain_tiny(x: int) -> int:
    return x + 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="200 tasks, one run of each (a smoke test)")
    quick = ap.parse_args().quick
    n, starts, runs_of_each = (200, 1, 1) if quick else (10_000, 5, 3)
    state = tempfile.mkdtemp()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    node = c.add_node(num_cpus=2, env_vars={"MIGPOOL_SIMULATE": "A100-80GB", "MIGPOOL_STATE_DIR": state})
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR")
    remote_tiny = ray.remote(num_cpus=1)(plain_tiny)
    ray.get([remote_tiny.remote(i) for i in range(200)])  # warm the worker pool

    def plain_run() -> tuple[float, float]:
        t = time.perf_counter()
        out = ray.get([remote_tiny.remote(i) for i in range(n)])
        assert out[-1] == n
        rate = n / (time.perf_counter() - t)
        lat = []
        for i in range(200):
            t = time.perf_counter()
            ray.get(remote_tiny.remote(i))
            lat.append(time.perf_counter() - t)
        return rate, statistics.median(lat)

    def plain_startup() -> float:
        cls = ray.remote(WorkerActor)
        t = time.perf_counter()
        actors = [
            cls.options(
                num_cpus=0,
                num_gpus=0,
                scheduling_strategy=node_affinity(node.node_id),
                runtime_env={"env_vars": {"CUDA_VISIBLE_DEVICES": f"MIG-{i}", "X": str(time.time())}},
            ).remote([], WorkerSpec(i, "", {}), 1)
            for i in range(2)
        ]
        ray.get([a.ready.remote() for a in actors])
        took = time.perf_counter() - t
        for a in actors:
            ray.kill(a)
        return took

    def migpool_startup() -> float:
        t = time.perf_counter()
        with migpool.Compute(
            provider=migpool.Ray(),
            nodes=1,
            worker=migpool.Worker(executor="process"),
            plugins=[migpool.plugins.mig(profile="3g.40gb", count="all", restore=True)],
            progress=False,
        ):
            took = time.perf_counter() - t
        return took

    def migpool_run() -> tuple[float, float]:
        with migpool.Compute(
            provider=migpool.Ray(),
            nodes=1,
            worker=migpool.Worker(executor="process"),
            plugins=[migpool.plugins.mig(profile="3g.40gb", count="all", restore=True)],
            progress=False,
        ) as pool:
            t = time.perf_counter()
            out = migpool.gather(*[tiny(i) for i in range(n)]) >> pool
            assert out[-1] == n
            rate = n / (time.perf_counter() - t)
            lat = []
            for i in range(200):
                t = time.perf_counter()
                tiny(i) >> pool
                lat.append(time.perf_counter() - t)
        return rate, statistics.median(lat)

    runs: dict[str, list] = {"plain": [], "migpool": [], "plain_start": [], "migpool_start": []}
    migpool_startup()  # a driver's first pool also starts migpool's agent on each node (once): not counted
    for i in range(starts):  # start-ups from the same idle cluster, in alternating order
        first, second = (plain_startup, migpool_startup) if i % 2 == 0 else (migpool_startup, plain_startup)
        a, b = first(), second()
        runs["plain_start"].append(a if first is plain_startup else b)
        runs["migpool_start"].append(b if first is plain_startup else a)
        time.sleep(0 if quick else 1.0)
    for _ in range(runs_of_each):
        runs["plain"].append(plain_run())
        runs["migpool"].append(migpool_run())
    med = lambda xs: statistics.median(xs)  # noqa: E731
    p_rate, p_lat = med([r[0] for r in runs["plain"]]), med([r[1] for r in runs["plain"]])
    m_rate, m_lat = med([r[0] for r in runs["migpool"]]), med([r[1] for r in runs["migpool"]])
    p_start, m_start = med(runs["plain_start"]), med(runs["migpool_start"])
    print(
        f"Ray {ray.__version__}, local cluster: head + one 2-CPU node (simulated A100-80GB); median of "
        f"{runs_of_each} runs (start-up: of {starts}, both from an idle cluster)"
    )
    print(
        f"  throughput  migpool {m_rate:8.0f} tasks/s   plain Ray tasks {p_rate:8.0f}   "
        f"×{m_rate / p_rate:.2f} (goal ≥ 1.0)"
    )
    print(
        f"  round trip  migpool {m_lat * 1e3:8.2f} ms        plain Ray tasks {p_lat * 1e3:8.2f} ms  "
        f"×{m_lat / p_lat:.2f} (goal ≤ 1.2)"
    )
    print(
        f"  start-up    migpool {m_start:8.2f} s         actors by hand  {p_start:8.2f} s   "
        f"×{m_start / p_start:.2f} (goal ≤ 1.5)"
    )
    ray.shutdown()
    c.shutdown()


if __name__ == "__main__":
    os.environ.pop("MIGPOOL_SIMULATE", None)
    main()
