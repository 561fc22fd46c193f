"""Warm spares: a pool whose workers start often keeps a started process ready (docs: guides/warm.md).

python examples/warm_spares.py     (a simulated A100-80GB)
"""

from __future__ import annotations

import os

import migpool as sky


@sky.function
def where() -> str:
    return f"process {os.getpid()} on {os.environ['CUDA_VISIBLE_DEVICES'][:12]}..."


def main() -> None:
    # --8<-- [start:spares]
    # a new process for every task: the pool keeps one spare ready by default
    worker = sky.Worker(executor="process", reuse_processes=False, preload=["json"])
    mig = sky.plugins.mig(profile="1g.10gb", count=1)
    local = sky.Local(simulate="A100-80GB")
    with sky.Compute(provider=local, worker=worker, plugins=[mig]) as pool:
        for task in range(3):
            print(f"task {task}: {where() >> pool}")
        spares = pool.stats()["spares"]
        print(f"spares used: {spares['used']}, preloaded: {spares['preload']}")
    # --8<-- [end:spares]


if __name__ == "__main__":
    main()
