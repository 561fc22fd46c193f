"""What a task can learn about where it runs: `migpool.instance_info()`."""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from ...mig.instance import MigInstance


@dataclass(frozen=True)
class Partition:
    """A MIG partition a worker is pinned to."""

    uuid: str
    profile: str
    gpu_index: int
    gpu_uuid: str
    memory_mib: int
    gi_id: int = 0
    ci_id: int = 0
    node: int = 0

    @classmethod
    def of(cls, instance: MigInstance, node: int = 0) -> Partition:
        """The partition a MIG instance (as the driver reports it) gives a worker on node `node`."""
        return cls(
            uuid=instance.uuid,
            profile=instance.profile_name,
            gpu_index=instance.gpu,
            gpu_uuid=instance.gpu_uuid,
            memory_mib=instance.memory_mib,
            gi_id=instance.gi_id,
            ci_id=instance.ci_id,
            node=node,
        )

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> Partition:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class InstanceInfo:
    """Where a task runs, with the reference system's names.

    worker             this worker's index on its node (None outside a worker)
    node, total_nodes  this node's index and the number of nodes (nodes are numbered 0..total_nodes-1)
    workers_per_node   workers on each node (the Worker's concurrency)
    global_worker_index, total_workers
    is_head            this task runs on node 0 (the reference's 0.12 rule; its 0.10 said worker 0 of node 0)
    rank, nodes, compute, head   the reference's 0.12 names: node, total_nodes, job_id, head_addr
    hostname           this machine's name
    accelerators       accelerators (MIG partitions or whole GPUs) the pool uses on this node; each worker sees one
    total_accelerators those of every node of the pool
    partition          the MIG partition this worker is pinned to, or None
    accelerator        the reference's dict for it: type (the profile), count, memory_gb; None without one
    job_id             this pool's identifier (the same on every node)
    peers              every node: [{"node": 0, "private_ip": "10.0.0.7", "public_ip": None}, ...]
    head_addr, head_port   where node 0 listens for the pool's own coordination (torch.distributed's master)
    """

    worker: int | None
    node: int
    total_nodes: int
    workers_per_node: int
    partition: Partition | None = None
    pid: int = 0
    hostname: str = ""
    accelerators: int = 0
    # set where nodes hold different numbers of workers (a Ray pool over different GPUs)
    global_index: int | None = field(default=None, repr=False)
    total: int | None = field(default=None, repr=False)
    total_accelerators: int = 0
    job_id: str = ""
    peers: list[dict[str, Any]] = field(default_factory=list)
    head_port: int = 0

    @property
    def head_addr(self) -> str:
        return str(self.peers[0]["private_ip"]) if self.peers else "127.0.0.1"

    @property
    def accelerator(self) -> dict[str, Any] | None:
        p = self.partition
        if p is None:
            return None
        return {"type": p.profile, "count": self.accelerators, "memory_gb": round(p.memory_mib / 1024, 2)}

    @property
    def global_worker_index(self) -> int | None:
        if self.global_index is not None:
            return self.global_index
        return None if self.worker is None else self.node * self.workers_per_node + self.worker

    @property
    def total_workers(self) -> int:
        return self.total if self.total is not None else self.total_nodes * self.workers_per_node

    @property
    def is_head(self) -> bool:
        """This task runs on the pool's first node (rank 0), as the reference's 0.12 has it; True outside a pool."""
        return self.node == 0

    @property
    def rank(self) -> int:
        """This node's index (the reference's 0.12 name; `node` is the same number here)."""
        return self.node

    @property
    def compute(self) -> str:
        """This pool's identifier (the reference's 0.12 name of job_id)."""
        return self.job_id

    @property
    def head(self) -> str:
        """The address of node 0 (the reference's 0.12 name of head_addr)."""
        return self.head_addr

    @property
    def host(self) -> str:
        """This machine's name."""
        return self.hostname

    @property
    def nodes(self) -> int:
        """Alias of total_nodes."""
        return self.total_nodes

    @property
    def concurrency(self) -> int:
        """Alias of workers_per_node."""
        return self.workers_per_node


Info = InstanceInfo  # (the reference's 0.11+ name)

_thread = threading.local()


def is_head() -> bool:
    """Whether the calling task runs on the pool's first node (rank 0); True outside a pool."""
    return instance_info().is_head


def instance_info() -> InstanceInfo:
    """Where the calling task runs: worker, node, counts, hostname, accelerators and the MIG partition."""
    local = getattr(_thread, "info", None)
    if local is not None:
        return local
    env = os.environ
    part = env.get("MIGPOOL_PARTITION")
    worker = env.get("MIGPOOL_WORKER_INDEX")
    return InstanceInfo(
        worker=int(worker) if worker is not None else None,
        node=int(env.get("MIGPOOL_NODE_INDEX", "0")),
        total_nodes=int(env.get("MIGPOOL_NODE_COUNT", "1")),
        workers_per_node=int(env.get("MIGPOOL_CONCURRENCY", "1")),
        partition=Partition.from_env(part) if part else None,
        pid=os.getpid(),
        hostname=socket.gethostname(),
        accelerators=int(env.get("MIGPOOL_ACCELERATORS", "0")),
        global_index=int(env["MIGPOOL_GLOBAL_WORKER_INDEX"]) if "MIGPOOL_GLOBAL_WORKER_INDEX" in env else None,
        total=int(env["MIGPOOL_TOTAL_WORKERS"]) if "MIGPOOL_TOTAL_WORKERS" in env else None,
        total_accelerators=int(env.get("MIGPOOL_TOTAL_ACCELERATORS", env.get("MIGPOOL_ACCELERATORS", "0"))),
        job_id=env.get("MIGPOOL_JOB_ID", ""),
        peers=json.loads(env.get("MIGPOOL_PEERS", "[]")),
        head_port=int(env.get("MIGPOOL_HEAD_PORT", "0")),
    )


def topology_env(job_id: str, peer_ips: list[str], head_port: int, total_accelerators: int) -> dict[str, str]:
    """What every worker of a pool learns of the whole pool (instance_info()'s job_id, peers, head_addr, …)."""
    peers = [{"node": i, "private_ip": ip, "public_ip": None} for i, ip in enumerate(peer_ips)]
    return {
        "MIGPOOL_JOB_ID": job_id,
        "MIGPOOL_PEERS": json.dumps(peers),
        "MIGPOOL_HEAD_PORT": str(head_port),
        "MIGPOOL_TOTAL_ACCELERATORS": str(total_accelerators),
    }


def set_thread_info(info: InstanceInfo | None) -> None:
    _thread.info = info
