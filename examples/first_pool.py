#!/usr/bin/env python3
"""The site's first example: two tasks on two MIG partitions of a simulated A100-80GB (no GPU needed)."""

# --8<-- [start:pool]
import migpool as sky


@sky.function
def hello(n: int) -> str:
    mine = sky.instance_info().partition  # the MIG partition this worker is pinned to
    return f"task {n} ran on {mine.profile} {mine.uuid}"


gpu = sky.Local(simulate="A100-80GB")  # on a real MIG GPU: sky.Local()
mig = sky.plugins.mig(profile="3g.40gb", count=2)
with sky.Compute(provider=gpu, plugins=[mig]) as compute:
    for line in sky.gather(hello(1), hello(2)) >> compute:
        print(line)
# --8<-- [end:pool]
