"""Task functions for the plugin tests: a light module (the standard library only), as user code usually is, so
that a worker's first call does not pay for importing a test module."""

import os
import time


def nap(x, seconds):
    time.sleep(seconds)
    return x * 2, os.getpid()


def fail(x):
    raise ValueError(f"bad {x}")


def pid_score(estimator, features, labels):
    return float(os.getpid())


def environment(names):
    return {n: os.environ.get(n) for n in names}


def module_state(name, env_names=()):
    """What a stand-in framework module recorded in this worker (its STATE), with this worker's place and some of
    its environment."""
    import importlib

    from migpool import instance_info

    time.sleep(0.2)  # (the other workers take the other tasks meanwhile)
    info = instance_info()
    return dict(
        state=dict(importlib.import_module(name).STATE),
        pid=os.getpid(),
        rank=info.global_worker_index,
        world=info.total_workers,
        head=f"{info.head_addr}:{info.head_port}",
        env={n: os.environ.get(n) for n in env_names},
    )
