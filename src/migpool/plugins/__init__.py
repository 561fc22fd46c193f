"""Plugins: a small interface for bootstrapping a node and preparing each worker process; `mig` is one.

A plugin may implement any of these hooks (the base class gives no-op defaults):
  transform_image(image) -> image       adjust what the workers need
  validate(node)                         refuse a configuration before anything is changed
  bootstrap(node)                        prepare the node (the mig plugin applies the MIG layout)
  around_process(worker) -> {env}        environment for one worker process, fixed before it starts
  worker_started(worker, pid, node)      a worker process is up
  teardown(node)                         the pool is closing
  rollback(node)                         undo bootstrap (another node of a Ray pool refused or failed)
"""

from .base import Built, Plugin
from .frameworks import torch
from .partitions import gpus, mig

__all__ = ["Built", "Plugin", "gpus", "mig", "torch"]
