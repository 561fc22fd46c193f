"""What `plugins.Jax`, `Keras`, `Accelerate` and `Cuml` do in each worker before it says it is ready (named in
INIT_ENV, as `plugins.Torch` names distributed.init): every worker of the pool is one process of the framework's
group, rank = its global worker index, world = all the pool's workers, coordinator = node 0 at the pool's head port
(the next port where torch.distributed holds that one)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from .distributed import INIT_ENV, TORCH_INIT, backend_for

KERAS_ENV = "KERAS_BACKEND"  # what keras reads at its import: jax, tensorflow or torch
ACCELERATE_BACKEND_ENV = "MIGPOOL_ACCELERATE_BACKEND"  # plugins.Accelerate(config={"backend": ...})

JAX_INIT = "migpool.pool.worker.frameworks:init_jax"
KERAS_INIT = "migpool.pool.worker.frameworks:init_keras"
ACCELERATE_INIT = "migpool.pool.worker.frameworks:init_accelerate"
CUML_INIT = "migpool.pool.worker.frameworks:init_cuml"


def topology(info: Any, port: int) -> dict[str, str]:
    """The variables accelerate reads, for this worker of the pool. A worker pinned to a partition or GPU sees that
    one device only, as device 0: there LOCAL_RANK is 0 and LOCAL_WORLD_SIZE 1 (accelerate picks its device by
    LOCAL_RANK), as the reference has them on its one-process nodes."""
    pinned = info.partition is not None
    return dict(
        MASTER_ADDR=info.head_addr,
        MASTER_PORT=str(port),
        WORLD_SIZE=str(info.total_workers),
        RANK=str(info.global_worker_index or 0),
        LOCAL_RANK="0" if pinned else str(info.worker or 0),
        LOCAL_WORLD_SIZE="1" if pinned else str(info.workers_per_node),
        NODE_RANK=str(info.node),
    )


def jax_coordinator(info: Any, env: Mapping[str, str]) -> str:
    """host:port of jax's coordinator: node 0 at the head port, or the port after it where torch.distributed's
    master already listens on the head port (both plugins in one pool)."""
    torch_too = TORCH_INIT in env.get(INIT_ENV, "").split(",")
    return f"{info.head_addr}:{info.head_port + 1 if torch_too else info.head_port}"


def init_jax() -> None:
    """Join jax's distributed runtime: one process per worker of the pool."""
    jax = importlib.import_module("jax")  # (imported by name: an optional package without type information)

    from ..api.info import instance_info

    info = instance_info()
    jax.distributed.initialize(
        coordinator_address=jax_coordinator(info, os.environ),
        num_processes=info.total_workers,
        process_id=info.global_worker_index or 0,
    )


def init_keras() -> None:
    """With the jax backend and several workers: data parallel over every device of the jax group (which
    plugins.Jax forms; list it before Keras), with one random state for all."""
    from ..api.info import instance_info

    info = instance_info()
    if os.environ.get(KERAS_ENV) != "jax" or info.total_workers < 2:
        return
    keras = importlib.import_module("keras")
    devices = keras.distribution.list_devices()
    if devices:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
        importlib.import_module("keras.src.backend.jax.distribution_lib").initialize_rng()


def init_accelerate() -> None:
    """Set the launch variables accelerate reads (its launcher's job), and with several workers form the
    torch.distributed group it uses, unless plugins.Torch formed it already: with config["backend"], else the best
    that works here (distributed.choose_backend: nccl where it can, else gloo)."""
    from ..api.info import instance_info

    info = instance_info()
    os.environ.update(topology(info, info.head_port))
    if info.total_workers < 2:
        return
    import datetime

    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = backend_for(os.environ.get(ACCELERATE_BACKEND_ENV, "auto"))
        if backend == "nccl":
            torch.cuda.set_device(0)  # this worker's one device, or the first of those it sees
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=info.global_worker_index or 0,
            world_size=info.total_workers,
            timeout=datetime.timedelta(seconds=120),
        )


def init_cuml() -> None:
    """Turn cuML's scikit-learn accelerator on in this worker, before any task imports scikit-learn."""
    importlib.import_module("cuml.accel").install()


JOBLIB_INIT = "migpool.pool.worker.frameworks:init_joblib"
SKLEARN_INIT = "migpool.pool.worker.frameworks:init_sklearn"


def init_joblib() -> None:
    """Import joblib while the worker starts, with the pool's other workers, not on its first batch."""
    importlib.import_module("joblib")


def init_sklearn() -> None:
    """Import joblib and scikit-learn's estimators' base while the worker starts (the first fit is then a fit)."""
    importlib.import_module("joblib")
    importlib.import_module("sklearn.base")
