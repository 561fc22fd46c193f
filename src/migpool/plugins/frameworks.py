"""Plugins for frameworks that run across the pool's workers: `Torch` (also spelt `torch`), `Jax`, `Keras`,
`Accelerate`, `Cuml` and `HuggingFace`. Each adds its packages to the workers' Image (nothing is installed where the
workers' Python has them), and its set-up runs in each worker before it is ready (pool/worker/distributed.py,
pool/worker/frameworks.py): the environment a framework reads at import, a process group over the pool's workers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import PluginError
from ..pool.api.providers import Node, WorkerSpec
from .base import Plugin

if TYPE_CHECKING:
    from ..pool.api.image import Image


class torch(Plugin):  # noqa: N801 - named like the reference system's `plugins.torch`
    """torch.distributed across the pool's workers: each worker is one rank (rank = its global worker index, world
    size = all the pool's workers, master = node 0), joined before its first task, on every node of a Ray pool too.

    torch()                   nccl where it can work, else gloo (CPU tensors, or ranks on MIG instances of one
                              GPU with an NCCL older than 2.31)
    torch(backend="gloo")     gloo, which works anywhere (through host memory)
    torch(backend="nccl")     nccl, refused with the reason where it cannot work (pool/distributed.py says why)

    version= / vision= / audio= add torch (and torchvision, torchaudio) to the workers' Image, as the reference's
    plugin does (version=None, the reference Torch's default: the latest torch); nothing is installed where the
    worker's Python has them already. Torch is the same class. A worker that dies leaves the
    process group without it: its replacement cannot rejoin, so the pool fails its tasks rather than hang.
    """

    needs_processes = True
    kind = "torch"
    collective = True

    def __init__(
        self,
        backend: str | None = None,
        cuda: str = "cu128",
        version: str | None = "latest",
        vision: str | None = None,
        audio: str | None = None,
    ) -> None:
        if backend not in (None, "nccl", "gloo"):
            raise PluginError(
                f"torch(backend=...) is 'nccl', 'gloo' or left out (the best that works), not {backend!r}"
            )
        self.backend = backend or "auto"
        self.cuda = cuda  # (the reference's wheel index suffix; migpool installs from the workers' own index)
        self.packages = [p for p in (_pinned("torch", version or "latest"), _pinned("torchvision", vision)) if p]
        self.packages += [p for p in (_pinned("torchaudio", audio),) if p]

    def preload(self) -> tuple[str, ...]:
        return ("torch",)  # most of a fresh worker's start-up: import it before the partition is known

    def transform_image(self, image: Image) -> Image:
        import dataclasses

        return dataclasses.replace(image, pip=(*image.pip, *(p for p in self.packages if p not in image.pip)))

    def validate(self, node: Node) -> None:
        if node.worker is not None and node.worker.executor == "thread":
            raise PluginError("plugins.torch() makes each worker a rank of its own: use Worker(executor='process')")

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.distributed import BACKEND_ENV, TORCH_INIT, with_initializer

        return {**with_initializer(worker.env, TORCH_INIT), BACKEND_ENV: self.backend}


Torch = torch  # the reference's 0.11+ spelling


def add_pip(image: Image, *packages: str) -> Image:
    """`image` with these pip requirements added (those it has already are not repeated)."""
    import dataclasses

    return dataclasses.replace(image, pip=(*image.pip, *(p for p in packages if p not in image.pip)))


def runs_here(pool: Any) -> bool:
    """Whether the open pool runs its tasks in this process: a thread pool without worker processes, whose tasks
    get no worker's environment or set-up, so a plugin gives them this process's while the pool is open."""
    return getattr(pool, "executor", None) == "thread" and not pool.worker_pids


@contextlib.contextmanager
def environment_here(env: Mapping[str, str]) -> Iterator[None]:
    """`env` in this process's environment until the context ends, when what was there before is put back."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _refuse_threads(node: Node, what: str) -> None:
    if node.worker is not None and node.worker.executor == "thread":
        raise PluginError(f"{what} makes each worker a process of its group: use Worker(executor='process')")


class Jax(Plugin):
    """jax.distributed across the pool's workers: each worker is one process of jax's group (process_id = its
    global worker index, num_processes = all the pool's workers, coordinator = node 0 at the pool's head port),
    joined before its first task, on every node of a Ray pool too.

    Jax(cuda="cu124")   adds jax[cu124] to the workers' Image (the reference's parameter and default)
    """

    needs_processes = True
    kind = "jax"
    collective = True

    def __init__(self, cuda: str = "cu124") -> None:
        self.cuda = cuda

    def __repr__(self) -> str:
        return f"Jax(cuda={self.cuda!r})"

    def transform_image(self, image: Image) -> Image:
        return add_pip(image, f"jax[{self.cuda}]")

    def validate(self, node: Node) -> None:
        _refuse_threads(node, "plugins.Jax()")

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.distributed import with_initializer
        from ..pool.worker.frameworks import JAX_INIT

        return with_initializer(worker.env, JAX_INIT)


class Keras(Plugin):
    """Keras 3 on a backend: KERAS_BACKEND is set in each worker before any task imports keras; with the jax
    backend and several workers, data parallel over the jax group's devices (list plugins.Jax() before it: Jax
    forms the group).

    Keras(backend="jax" | "tensorflow" | "torch")   (the reference's parameter and default: "jax"); adds keras and
                                                    the backend's package to the workers' Image

    A thread pool runs its tasks in this process: there KERAS_BACKEND is set here while the pool is open.
    """

    kind = "keras"
    BACKENDS = ("jax", "tensorflow", "torch")

    def __init__(self, backend: str = "jax") -> None:
        if backend not in self.BACKENDS:
            raise PluginError(f"Keras(backend=...) is 'jax', 'tensorflow' or 'torch', not {backend!r}")
        self.backend = backend

    def __repr__(self) -> str:
        return f"Keras(backend={self.backend!r})"

    def transform_image(self, image: Image) -> Image:
        return add_pip(image, "keras", self.backend)

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.distributed import with_initializer
        from ..pool.worker.frameworks import KERAS_ENV, KERAS_INIT

        return {KERAS_ENV: self.backend, **with_initializer(worker.env, KERAS_INIT)}

    def around_pool(self, pool: Any) -> contextlib.AbstractContextManager[Any] | None:
        from ..pool.worker.frameworks import KERAS_ENV

        return environment_here({KERAS_ENV: self.backend}) if runs_here(pool) else None


FSDP_KEYS = {
    "sharding_strategy": "FSDP_SHARDING_STRATEGY",
    "auto_wrap_policy": "FSDP_AUTO_WRAP_POLICY",
    "transformer_layer_cls_to_wrap": "FSDP_TRANSFORMER_CLS_TO_WRAP",
    "backward_prefetch": "FSDP_BACKWARD_PREFETCH",
    "state_dict_type": "FSDP_STATE_DICT_TYPE",
    "offload_params": "FSDP_OFFLOAD_PARAMS",
    "sync_module_states": "FSDP_SYNC_MODULE_STATES",
    "use_orig_params": "FSDP_USE_ORIG_PARAMS",
    "cpu_ram_efficient_loading": "FSDP_CPU_RAM_EFFICIENT_LOADING",
    "forward_prefetch": "FSDP_FORWARD_PREFETCH",
    "activation_checkpointing": "FSDP_ACTIVATION_CHECKPOINTING",
    "min_num_params": "FSDP_MIN_NUM_PARAMS",
}
DEEPSPEED_KEYS = {
    "zero_stage": "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    "offload_optimizer_device": "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
    "offload_param_device": "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE",
    "offload_optimizer_nvme_path": "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_NVME_PATH",
    "offload_param_nvme_path": "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_NVME_PATH",
    "zero3_save_16bit_model": "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL",
    "config_file": "ACCELERATE_DEEPSPEED_CONFIG_FILE",
    "gradient_accumulation_steps": "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
    "gradient_clipping": "ACCELERATE_GRADIENT_CLIPPING",
}


def accelerate_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The ACCELERATE_* / FSDP_* variables accelerate reads, from a config shaped like `accelerate config`'s file:
    an `fsdp` dict (or else a `deepspeed` dict) turns it on and maps its keys, `mixed_precision` sets the dtype;
    booleans are written in lower case."""

    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    env: dict[str, str] = {}
    fsdp, deepspeed = config.get("fsdp"), config.get("deepspeed")
    if isinstance(fsdp, Mapping):
        env["ACCELERATE_USE_FSDP"] = "true"
        env.update({FSDP_KEYS.get(k) or str(k).upper(): text(v) for k, v in fsdp.items()})
    elif isinstance(deepspeed, Mapping):
        env["ACCELERATE_USE_DEEPSPEED"] = "true"
        env.update({DEEPSPEED_KEYS.get(k) or str(k).upper(): text(v) for k, v in deepspeed.items()})
    if config.get("mixed_precision"):
        env["ACCELERATE_MIXED_PRECISION"] = str(config["mixed_precision"])
    return env


class Accelerate(Plugin):
    """Hugging Face accelerate's launch configuration, from the pool's topology: what `accelerate launch` would set
    (MASTER_ADDR/PORT, WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK: each worker one process) and
    what the config asks for (accelerate_env), set in each worker before its first task; with several workers it
    forms the torch.distributed group (config["backend"], else nccl where it can work, else gloo), unless
    plugins.Torch did.

    Accelerate(config={"fsdp": {...}, "mixed_precision": "bf16", "backend": "gloo"})   (the reference's parameter)
    """

    needs_processes = True
    kind = "accelerate"
    collective = True

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self.env = accelerate_env(self.config)  # checked now: a config that cannot be written is refused here

    def __repr__(self) -> str:
        return f"Accelerate(config={self.config!r})"

    def transform_image(self, image: Image) -> Image:
        return add_pip(image, "accelerate")

    def validate(self, node: Node) -> None:
        _refuse_threads(node, "plugins.Accelerate()")

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.distributed import with_initializer
        from ..pool.worker.frameworks import ACCELERATE_BACKEND_ENV, ACCELERATE_INIT

        backend = {ACCELERATE_BACKEND_ENV: str(self.config["backend"])} if "backend" in self.config else {}
        return {**self.env, **backend, **with_initializer(worker.env, ACCELERATE_INIT)}


class Cuml(Plugin):
    """RAPIDS cuML's scikit-learn accelerator (cuml.accel), turned on in each worker before its first task, so
    scikit-learn estimators there run on the GPU where cuML supports them.

    Cuml(cuda="cu12")   adds cuml-cu12 to the workers' Image (the reference's parameter and default)

    A thread pool runs its tasks in this process: there the accelerator is turned on here, when the pool opens.
    """

    kind = "cuml"

    def __init__(self, cuda: str = "cu12") -> None:
        self.cuda = cuda

    def __repr__(self) -> str:
        return f"Cuml(cuda={self.cuda!r})"

    def transform_image(self, image: Image) -> Image:
        return add_pip(image, f"cuml-{self.cuda}")

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.distributed import with_initializer
        from ..pool.worker.frameworks import CUML_INIT

        return with_initializer(worker.env, CUML_INIT)

    def around_pool(self, pool: Any) -> contextlib.AbstractContextManager[Any] | None:
        if runs_here(pool):  # (a thread pool's tasks use this process's scikit-learn: it stays accelerated)
            from ..pool.worker.frameworks import init_cuml

            init_cuml()
        return None


HF_CACHE_VARIABLES = ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE")


class HuggingFace(Plugin):
    """The Hugging Face Hub's token and cache in every worker: HF_TOKEN (`token`, else this process's HF_TOKEN,
    which a Ray pool's nodes do not otherwise see), HF_HOME (`cache_dir`, else this process's), HF_HUB_CACHE,
    HF_DATASETS_CACHE and HF_HUB_OFFLINE as this process has them. Adds huggingface_hub to the workers' Image.

    HuggingFace(token=None)                  (the reference's parameter)
    HuggingFace(token, cache_dir="/data/hf") one cache for every worker of the machine

    A thread pool runs its tasks in this process: there the variables are set here while the pool is open.
    """

    kind = "huggingface"

    def __init__(self, token: str | None = None, *, cache_dir: str | None = None) -> None:
        self.token = token
        found = {k: v for k in HF_CACHE_VARIABLES if (v := os.environ.get(k))}
        if cache_dir is not None:
            found["HF_HOME"] = cache_dir
        given = token or os.environ.get("HF_TOKEN")
        self.env = {**found, **({"HF_TOKEN": given} if given else {})}

    def __repr__(self) -> str:
        return f"HuggingFace(token={'***' if self.token else None})"

    def transform_image(self, image: Image) -> Image:
        return add_pip(image, "huggingface_hub")

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        return dict(self.env)

    def around_pool(self, pool: Any) -> contextlib.AbstractContextManager[Any] | None:
        return environment_here(self.env) if runs_here(pool) else None


def _pinned(name: str, version: str | None) -> str | None:
    """A pip requirement as the reference's torch plugin writes it: 'latest', '>=2.4', '==2.4.1' or '2.4.1'."""
    if version is None:
        return None
    if version == "latest":
        return name
    return f"{name}{version}" if version[0] in "<>=!~" else f"{name}=={version}"
