"""Dynamic MIG, the README's example: partitions made for each task, on one machine.

On a machine with a MIG-capable GPU (needs root, and changes its MIG layout):
    python examples/dynamic_mig.py
Anywhere (a simulated A100-80GB):
    python examples/dynamic_mig.py --simulate A100-80GB
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time

import migpool as sky


# --8<-- [start:tasks]
@sky.function(partition="3g.40gb")
def train(steps: int) -> str:
    time.sleep(0.05 * steps)  # stands for a training job
    return f"train ({steps} steps) on {sky.instance_info().partition.profile}"


@sky.function(partition="1g.10gb")
def infer(batch: int) -> str:
    time.sleep(0.1)
    return f"infer (batch {batch}) on {sky.instance_info().partition.profile}"


@sky.function(min_memory="15GB")
def embed(n: int) -> str:
    time.sleep(0.1)
    return f"embed ({n}) on {sky.instance_info().partition.profile}"


# --8<-- [end:tasks]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simulate", help="a catalog GPU, e.g. A100-80GB")
    args = ap.parse_args()
    jobs = [
        train(10),
        *[infer(b) for b in range(6)],
        train(5),
        *[embed(n) for n in range(3)],
        *[infer(b) for b in range(4)],
    ]
    try:
        with sky.Compute(
            provider=sky.Local(simulate=args.simulate),
            worker=sky.Worker(executor="process"),
            plugins=[sky.plugins.mig(dynamic=True, gpus="all", keep_idle=30.0)],
        ) as compute:
            for r in sky.gather(*jobs, stream=True, ordered=False) >> compute:  # as each finishes
                print(r)
            print("live partitions:", ", ".join(sorted(p.profile for p in compute.partitions)))
            for ch in compute.changes:  # each change and why, wrapped for an 80-column terminal
                line = f"{ch['action']:<8} {ch['profile']:<8} GPU {ch['gpu']} at {ch['placement']}: {ch['reason']}"
                print(textwrap.fill(line, 80, initial_indent="  ", subsequent_indent="      "))
    except sky.MigpoolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
