"""The compute pool's API in one file (docs: guides/pool.md). On a machine with a MIG-capable GPU it makes two
3g partitions (root; it changes the MIG layout and restores it); anywhere else:

    python examples/pool_tour.py --simulate A100-80GB
"""

import argparse
import os
import time

import migpool as sky


# --8<-- [start:pool]
@sky.function
def train(epochs: int) -> dict:
    info = sky.instance_info()  # worker index, node, concurrency, and the MIG partition
    time.sleep(0.01 * epochs)  # stands for the work: torch.device("cuda") is this worker's partition alone
    partition = os.environ["CUDA_VISIBLE_DEVICES"]
    return {"worker": info.worker, "partition": partition}


def main(simulate: str | None) -> None:
    with sky.Compute(
        provider=sky.Local(simulate=simulate),  # Local(): this machine's GPUs; simulate="A100-80GB": none needed
        worker=sky.Worker(concurrency=2, executor="process"),
        plugins=[sky.plugins.mig(profile="3g.40gb")],  # two 3g.40gb partitions: one worker on each
        progress=False,
    ) as compute:
        results = sky.gather(train(10), train(10)) >> compute  # a list, in task order
        for r in sky.gather(train(1), train(1), stream=True) >> compute:  # each as soon as it is its turn
            print(r)
        fut = compute.submit(train(3))  # a concurrent.futures.Future
        pair = (train(1) & train(2)) >> compute  # in parallel: parenthesize, Python binds >> before &
        squares = compute.map(pow, range(10), [2] * 10)  # a list, in input order
        worker = fut.result()["worker"]
        print(len(results), worker in (0, 1), len(pair), squares[:4])
        # --8<-- [end:pool]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--simulate", help="a catalog GPU to simulate, e.g. A100-80GB")
    try:
        main(ap.parse_args().simulate)
    except sky.MigpoolError as e:  # no GPU, no permission, a layout that cannot fit: one line, not a traceback
        raise SystemExit(f"pool_tour.py: {e}") from None
