"""torch.distributed for a pool's workers (`plugins.torch()`): every worker of the pool is one rank.

The plugin names `init` in each worker's environment (INIT_ENV); the worker calls it before it says it is ready,
so that the process group exists before the first task, as the reference system sets it up. Rank, world size and
the master's address come from `instance_info()`: rank = global worker index, world = all the pool's workers,
master = node 0 at the pool's head port.

Which backend can work is decided by `choose_backend`, from what NVIDIA documents of NCCL and MIG: NCCL tells
GPUs apart by their PCI bus id, which all MIG instances of one GPU share, so up to NCCL 2.30 a communicator with two
ranks on one GPU fails ("Duplicate GPU detected"); NCCL 2.31 allows it only with NCCL_MULTI_RANK_GPU_ENABLE=1 and
not with NVLink SHARP forced on (NCCL_NVLS_ENABLE=1). gloo (through host memory) works anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..api.providers import SHARED_GPU_ENV

INIT_ENV = "MIGPOOL_INIT"  # "module:function,...": called in each worker before it is ready
BACKEND_ENV = "MIGPOOL_TORCH_BACKEND"  # what the plugin was asked for: nccl, gloo or auto
TORCH_INIT = "migpool.pool.worker.distributed:init"
MULTI_RANK_NCCL = (2, 31)  # the first NCCL that runs several ranks on one GPU (with NCCL_MULTI_RANK_GPU_ENABLE=1)


def with_initializer(env: Mapping[str, str], name: str) -> dict[str, str]:
    """INIT_ENV with `name` ("module:function") added after those already in `env` (several plugins may each
    name one; they run in the order the plugins are listed)."""
    known = [n for n in env.get(INIT_ENV, "").split(",") if n and n != name]
    return {INIT_ENV: ",".join([*known, name])}


def choose_backend(
    requested: str, cuda: bool, nccl: tuple[int, ...] | None, shared_gpu: bool, env: Mapping[str, str]
) -> tuple[str, dict[str, str]]:
    """The backend to use and the environment NCCL needs for it; raises ValueError, with the reason, where the
    combination cannot work. `requested`: "nccl", "gloo" or "auto" (nccl where it can work, else gloo)."""
    if requested == "gloo":
        return "gloo", {}
    if not cuda or nccl is None:
        if requested == "nccl":
            raise ValueError(
                "torch(backend='nccl') needs CUDA and NCCL in the workers, and this torch has "
                + ("no NCCL" if cuda else "no CUDA device")
                + "; use backend='gloo' (or leave it out: gloo is chosen)"
            )
        return "gloo", {}
    if not shared_gpu:
        return "nccl", {}
    if nccl < MULTI_RANK_NCCL:
        if requested == "nccl":
            raise ValueError(
                f"torch(backend='nccl'): two ranks run on MIG instances of one GPU, and NCCL "
                f"{'.'.join(map(str, nccl))} refuses that (it tells GPUs apart by PCI bus id, which MIG instances "
                "share: 'Duplicate GPU detected'); NCCL 2.31 or newer allows it; else use backend='gloo'"
            )
        return "gloo", {}
    if env.get("NCCL_NVLS_ENABLE") == "1":
        raise ValueError(
            "NCCL_NVLS_ENABLE=1 is set, and NCCL aborts a communicator whose ranks share a GPU with NVLink SHARP "
            "forced on: unset it (NCCL's default decides), or use backend='gloo'"
        )
    return "nccl", {"NCCL_MULTI_RANK_GPU_ENABLE": env.get("NCCL_MULTI_RANK_GPU_ENABLE", "1")}


def init() -> None:
    """Join the pool's process group (called by the worker before it is ready)."""
    import datetime

    import torch
    import torch.distributed as dist

    from ..api.info import instance_info

    if dist.is_initialized():  # (plugins.Accelerate, listed first, formed it)
        return
    info = instance_info()
    rank = info.global_worker_index or 0
    backend = backend_for(os.environ.get(BACKEND_ENV, "auto"))
    os.environ.update(
        MASTER_ADDR=info.head_addr,
        MASTER_PORT=str(info.head_port),
        WORLD_SIZE=str(info.total_workers),
        RANK=str(rank),
        LOCAL_RANK=str(info.worker or 0),
        LOCAL_WORLD_SIZE=str(info.workers_per_node),
        NODE_RANK=str(info.node),
    )
    if backend == "nccl":
        torch.cuda.set_device(0)  # this worker's one device (its MIG partition or GPU)
    dist.init_process_group(
        backend=backend, init_method="env://", timeout=datetime.timedelta(seconds=120), world_size=info.total_workers
    )


def backend_for(requested: str) -> str:
    """The backend for this worker's torch (choose_backend), with the environment NCCL needs set."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    nccl = tuple(torch.cuda.nccl.version()) if cuda and dist.is_nccl_available() else None
    backend, extra = choose_backend(requested, cuda, nccl, os.environ.get(SHARED_GPU_ENV) == "1", os.environ)
    os.environ.update(extra)
    return backend


def run_initializers() -> None:
    """Call what INIT_ENV names; a failure ends the worker with its one-line reason (the pool shows it)."""
    import importlib

    for name in filter(None, os.environ.get(INIT_ENV, "").split(",")):
        module, _, fn = name.partition(":")
        getattr(importlib.import_module(module), fn)()
