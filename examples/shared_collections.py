"""Collections that every task of a pool shares, on four nodes of this machine (docs: guides/data.md).

python examples/shared_collections.py
"""

import migpool as sky


# --8<-- [start:collections]
@sky.function
def step(batch: int) -> str | None:
    info = sky.instance_info()
    sky.counter("steps").increment()  # atomic, pool-wide
    with sky.lock("best"):  # one holder at a time, in the whole pool
        best = sky.dict("best")
        best["loss"] = min(best.get("loss", 9e9), 1.0 / (info.node + 1))
    sky.barrier("epoch", info.total_workers).wait()  # every worker arrives, then all go on
    if not sky.set("batches").add(batch):  # False: another task had it already
        return "skipped"
    return sky.queue("work").get(timeout=1.0)  # None after the timeout


with sky.Compute(provider=sky.Local(), nodes=4, progress=False) as compute:
    compute.queue("work").put("job-1")  # the same collections, from the pool
    results = step(0) @ compute  # once on each of the 4 nodes
    steps, best = compute.counter("steps").value, compute.dict("best")["loss"]
    print(sorted(map(str, results)), steps, best)
# --8<-- [end:collections]
