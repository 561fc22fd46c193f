"""Plugins: a small interface for bootstrapping a node and preparing each worker process, and the reference
system's plugins (Skyward 0.12's class spellings; the 0.10 lower-case ones name the same classes):

  Mig (mig)                 MIG partitions, one worker pinned to each (partitions.py); gpus: whole GPUs
  Torch (torch), Jax, Keras, Accelerate, Cuml, HuggingFace     frameworks in each worker (frameworks.py)
  Joblib, Sklearn           joblib's parallel backend over the pool's workers (parallel.py)
  Mps                       an MPS control daemon per partition (mps.py)

A plugin may implement any of these hooks (the base class gives no-op defaults):
  transform_image(image) -> image       adjust what the workers need
  validate(node)                         refuse a configuration before anything is changed
  bootstrap(node)                        prepare the node (the mig plugin applies the MIG layout)
  around_process(worker) -> {env}        environment for one worker process, fixed before it starts
  worker_started(worker, pid, node)      a worker process is up
  teardown(node)                         the pool is closing
  rollback(node)                         undo bootstrap (another node of a Ray pool refused or failed)
  around_pool(pool) -> context           entered in this process while the pool is open (Joblib's backend)
"""

from typing import Any

from .base import Built, Plugin
from .frameworks import Accelerate, Cuml, HuggingFace, Jax, Keras, Torch, torch
from .mps import Mps
from .parallel import Joblib, Sklearn
from .partitions import gpus, mig

Mig = mig  # the reference's 0.11+ spelling
# the 0.10 spellings
jax, keras, accelerate, cuml, huggingface, mps, joblib, sklearn = (
    Jax, Keras, Accelerate, Cuml, HuggingFace, Mps, Joblib, Sklearn
)  # fmt: skip

PLUGINS: dict[str, type[Plugin]] = {
    "torch": Torch,
    "huggingface": HuggingFace,
    "joblib": Joblib,
    "jax": Jax,
    "keras": Keras,
    "cuml": Cuml,
    "sklearn": Sklearn,
    "accelerate": Accelerate,
    "mig": Mig,
    "mps": Mps,
}  # the reference's registry: each plugin by its kind

# the reference's functions over plugin references (PluginRef), which its control daemon applies
_DAEMON_ONLY = ("chain", "collective", "image", "resolve")

__all__ = [
    "PLUGINS",
    "Accelerate",
    "Built",
    "Cuml",
    "HuggingFace",
    "Jax",
    "Joblib",
    "Keras",
    "Mig",
    "Mps",
    "Plugin",
    "Sklearn",
    "Torch",
    "accelerate",
    "cuml",
    "gpus",
    "huggingface",
    "jax",
    "joblib",
    "keras",
    "mig",
    "mps",
    "sklearn",
    "torch",
]


def __getattr__(name: str) -> Any:
    if name in _DAEMON_ONLY:
        raise AttributeError(
            f"sky.plugins.{name} is the reference's control daemon's own (it works on plugin references it "
            "stores); migpool has no daemon: pass the plugin objects to Compute(plugins=[...])"
        )
    raise AttributeError(f"module 'migpool.plugins' has no attribute {name!r}")
