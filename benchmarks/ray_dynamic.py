"""Dynamic MIG on Ray: partitions made on several nodes side by side vs one at a time, in the same run.

A local Ray cluster of NODES nodes, each a simulated A100-80GB that charges hardware latencies for GPU-instance
creation and destruction (MIGPOOL_SIM_LATENCY=hardware: 92 ms, 142 ms). A wave of tasks that each name a 1g.10gb
(PER_NODE per node, all waiting at once) goes to a fresh dynamic pool. Timed: from the wave's submission until the
last partition exists (its create noted in `compute.changes`). Not the wave's own end: on this local cluster every
node shares one machine's CPUs, and starting the actors (a Ray worker process and a migpool worker process each)
takes most of it. Runs alternate between:

  (a) migpool: one change thread per node, so the nodes' partitions are made side by side (one at a time on each
      node, whose driver serializes GPU-instance creation anyway);
  (b) baseline: every node's changes on one shared thread, one after another (migpool before it had per-node
      change threads).

Goal: (a) ÷ (b) near 1 ÷ NODES (on real nodes, whose CPUs are their own; here the nodes' agents share two CPUs
with the actors starting).   python benchmarks/ray_dynamic.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from ray.cluster_utils import Cluster

import migpool
from migpool.pool.dynamic.controller import SiteEffects

NODES, PER_NODE, ROUNDS, TASK_S = 2, 4, 3, 0.2


@migpool.function(partition="1g.10gb")
def hold(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def one_thread(self: SiteEffects, gpu, inst):
    """(b): every node's changes go to one thread, shared by the controller's nodes."""
    shared = self.changers.setdefault(-1, ThreadPoolExecutor(1, thread_name_prefix="migpool-change-all"))
    self.changers[gpu[0]] = shared
    return ORIGINAL(self, gpu, inst)


ORIGINAL = SiteEffects.make


def wave(serial: bool) -> float:
    SiteEffects.make = one_thread if serial else ORIGINAL
    try:
        with migpool.Compute(
            provider=migpool.Ray(node_resource="mig"),
            nodes=NODES,
            progress=False,
            worker=migpool.Worker(executor="process"),
            plugins=[migpool.plugins.mig(dynamic=True, gpus="all", keep_idle=60.0)],
        ) as pool:
            t0 = time.time()
            migpool.gather(*[hold(TASK_S) for _ in range(NODES * PER_NODE)]) >> pool
            made = [ch["time"] - t0 for ch in pool.changes if ch["action"] == "create"]
    finally:
        SiteEffects.make = ORIGINAL
    assert len(made) == NODES * PER_NODE, f"expected {NODES * PER_NODE} partitions, made {len(made)}"
    return max(made)


def main() -> None:
    root = tempfile.mkdtemp()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for k in range(NODES):
        c.add_node(
            num_cpus=2,
            resources={"mig": 1},
            env_vars={
                "MIGPOOL_SIMULATE": "A100-80GB",
                "MIGPOOL_STATE_DIR": os.path.join(root, f"node{k}"),
                "MIGPOOL_SIM_LATENCY": "hardware",
            },
        )
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR")
    try:
        runs: dict[bool, list[float]] = {False: [], True: []}
        wave(False)  # warm-up: Ray's worker processes and imports, not timed
        for _ in range(ROUNDS):
            for serial in (True, False):
                runs[serial].append(wave(serial))
    finally:
        ray.shutdown()
        c.shutdown()
    print(
        textwrap.fill(
            f"{NODES} nodes × simulated A100-80GB (hardware latencies), {PER_NODE} × 1g.10gb per node; "
            f"median of {ROUNDS} rounds, from the wave's submission until its last partition exists:",
            80,
        )
    )
    med = {serial: statistics.median(runs[serial]) for serial in runs}
    for serial, name in ((True, "(b) one change thread (baseline)"), (False, "(a) a change thread per node")):
        print(f"  {name:34} {med[serial]:.2f} s")
    print(f"  (a) ÷ (b): ×{med[False] / med[True]:.2f} (goal near {1 / NODES:.2f})")


if __name__ == "__main__":
    main()
