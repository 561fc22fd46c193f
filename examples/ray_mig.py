"""The reference API across a Ray cluster: one Ray actor per MIG partition, on two nodes.

On a real Ray cluster with MIG-capable GPUs (see deploy/ray/ and deploy/kuberay/; needs root on each node):
    python examples/ray_mig.py
Anywhere (a local Ray cluster of two simulated nodes, A100-80GB and H100-80GB, started by this script):
    python examples/ray_mig.py --local-cluster
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import migpool as sky


@sky.function
def train(epochs: int) -> dict:
    """A small training loop: PyTorch on the partition where it is installed, NumPy on the CPU otherwise."""
    info = sky.instance_info()
    start = time.perf_counter()
    try:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        w = torch.zeros(64, 1, device=device, requires_grad=True)
        x = torch.randn(2048, 64, device=device)
        y = x @ torch.linspace(-1, 1, 64, device=device).unsqueeze(1)
        opt = torch.optim.SGD([w], lr=0.05)
        for _ in range(epochs * 20):
            opt.zero_grad()
            loss = ((x @ w - y) ** 2).mean()
            loss.backward()
            opt.step()
        final = float(loss)
    except ImportError:
        import numpy as np

        rng = np.random.default_rng(info.global_worker_index)
        x = rng.standard_normal((2048, 64))
        y = x @ np.linspace(-1, 1, 64)
        w = np.zeros(64)
        for _ in range(epochs * 20):
            w -= 0.05 * 2 * x.T @ (x @ w - y) / len(x)
        final = float(((x @ w - y) ** 2).mean())
    return dict(
        node=info.node,
        worker=info.worker,
        partition=os.environ.get("CUDA_VISIBLE_DEVICES"),
        profile=info.partition.profile if info.partition else None,
        loss=round(final, 4),
        seconds=round(time.perf_counter() - start, 2),
    )


@sky.function
def report() -> dict:
    info = sky.instance_info()
    return dict(
        node=info.node,
        hostname=socket.gethostname(),
        head_node=info.node == 0,
        partitions_here=info.accelerators,
        total_workers=info.total_workers,
    )


def local_cluster():  # pragma: no cover - exercised by tests/pool/test_ray.py through this script
    """Two Ray nodes on this machine, each simulating its own GPU (MIGPOOL_SIMULATE per node)."""
    import ray
    from ray.cluster_utils import Cluster

    root = tempfile.mkdtemp(prefix="migpool-ray-")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    here = os.path.dirname(os.path.abspath(__file__))
    for spec in ("A100-80GB", "H100-80GB"):
        cluster.add_node(
            num_cpus=2,
            env_vars={
                "MIGPOOL_SIMULATE": spec,
                "MIGPOOL_STATE_DIR": os.path.join(root, spec),
                "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]),
            },
        )
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    return cluster


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--local-cluster", action="store_true", help="start two simulated Ray nodes on this machine")
    args = ap.parse_args(argv)
    cluster = local_cluster() if args.local_cluster else None
    try:
        # --- the reference example, unchanged ---
        # --8<-- [start:pool]
        with sky.Compute(
            provider=sky.Ray(address="auto"),
            nodes=2,
            worker=sky.Worker(concurrency=2, executor="process"),
            image=sky.Image(pip=["torch"]),
            plugins=[sky.plugins.mig(profile="3g.40gb")],
        ) as compute:
            results = sky.gather(*[train(10) for _ in range(4)]) >> compute
            per_node = report() @ compute
            fut = train(1) > compute
            one = fut.result()
        # --8<-- [end:pool]
        # ---
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
    for r in sorted(results, key=lambda r: (r["node"], r["worker"])):
        print(
            f"node {r['node']} worker {r['worker']}: {r['profile']} {r['partition']} "
            f"loss={r['loss']} in {r['seconds']}s"
        )
    for n in per_node:
        print(f"node {n['node']} ({n['hostname']}): {n['partitions_here']} partitions, head={n['head_node']}")
    return dict(results=results, per_node=per_node, one=one)


if __name__ == "__main__":
    try:
        main()
    except sky.MigpoolError as e:
        import sys

        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
