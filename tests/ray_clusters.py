"""Local Ray clusters whose nodes simulate GPUs, as the Ray tests start them (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import migpool

TESTS = str(Path(__file__).parent)
SRC = str(Path(migpool.__file__).resolve().parents[1])


@contextlib.contextmanager
def simulated_nodes(
    root: Path,
    names: Sequence[str],
    resource: str,
    spec: str = "A100-80GB",
    head_cpus: int | None = None,
    path: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """A Ray cluster of the nodes `names` (2 CPUs each), each simulating `spec` with its state under root/name and
    the custom resource `resource` (what a pool's `Ray(node_resource=)` selects), with ray.init connected to it
    for the block. `head_cpus`: a head node of its own with that many CPUs (None: the first node is the head);
    `path`: PYTHONPATH entries after the tests' and migpool's; `env`: more environment on every node."""
    import ray
    from ray.cluster_utils import Cluster

    own_head = head_cpus is not None
    cluster = Cluster(initialize_head=own_head, head_node_args={"num_cpus": head_cpus} if own_head else None)
    for name in names:
        node_env = {
            "MIGPOOL_SIMULATE": spec,
            "MIGPOOL_STATE_DIR": str(root / name),
            "MIGPOOL_CONFIG_DIR": str(root / "config"),
            "PYTHONPATH": os.pathsep.join([TESTS, SRC, *path]),
            **(env or {}),
        }
        cluster.add_node(num_cpus=2, resources={resource: 1}, env_vars=node_env)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
