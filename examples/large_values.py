"""Large values, values shared by many tasks, and tasks that stream (docs: guides/data.md).

python examples/large_values.py
"""

import numpy as np

import migpool as sky


# --8<-- [start:values]
@sky.function
def scale(batch: np.ndarray, factor: float) -> np.ndarray:  # a 1 GiB array goes in and out at memory speed
    return batch * factor


@sky.function
def dot(weights: np.ndarray, i: int) -> float:
    return float(weights[i] @ weights[i])


@sky.function
def epochs(n: int):
    for i in range(n):
        yield {"epoch": i, "loss": 1.0 / (i + 1)}  # a generator streams: each item as the worker yields it


@sky.function
def running_mean(rows) -> float:  # an iterator argument streams to the task, read lazily
    total = count = 0
    for r in rows:
        total, count = total + r, count + 1
    return total / count


worker = sky.Worker(concurrency=2, executor="process")
with sky.Compute(provider=sky.Local(), worker=worker, progress=False) as c:
    doubled = scale(np.ones((1024, 1024)), 2.0) >> c
    weights = c.put(np.eye(256))  # stored once: each worker receives it at most once
    norms = sky.gather(*(dot(weights, i) for i in range(8))) >> c
    for metrics in epochs(3) >> c:  # `epochs(3) > c` is a future of the same iterator
        print(metrics)
    mean = running_mean(iter(range(101))) >> c
    print(doubled.sum(), sum(norms), mean)  # 2097152.0 8.0 50.0
# --8<-- [end:values]
