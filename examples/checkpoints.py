"""A task that dynamic MIG may move between partition sizes: it yields checkpoints and resumes from one
(docs: guides/dynamic.md). Anywhere (a simulated A100-80GB):

    python examples/checkpoints.py --simulate A100-80GB
"""

import argparse
import time

import migpool as sky
from migpool import Checkpoint


# --8<-- [start:checkpoint]
@sky.function(checkpoint=True, min_memory="9GB")
def train(steps: int, resume=None):
    state = resume or {"step": 0, "ran_on": []}  # resume: the state of the last checkpoint, after a move
    state["ran_on"].append(sky.instance_info().partition.profile)
    while state["step"] < steps:
        time.sleep(0.02)  # one step of work
        state["step"] += 1
        yield Checkpoint(state, done=state["step"], total=steps)  # where it may stop, and how far it is
    return state["ran_on"]


@sky.function(min_memory="9GB")
def infer(batch: int) -> str:
    time.sleep(0.2)
    return sky.instance_info().partition.profile


def main(simulate: str | None) -> None:
    mig = sky.plugins.mig(dynamic=True, keep_idle=30.0, remember=False)
    local = sky.Local(simulate=simulate)
    with sky.Compute(provider=local, plugins=[mig], progress=False) as compute:
        long = compute.submit(train(300))  # alone on the GPU: it gets a large partition
        time.sleep(1.0)
        sizes = sky.gather(*[infer(b) for b in range(3)]) >> compute  # more work: it may be shrunk for them
        print("train ran on", long.result(), "| infer on", sizes)
        for change in compute.changes:
            print(change["action"], change["profile"], change["reason"][:60])
        # --8<-- [end:checkpoint]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--simulate", help="a catalog GPU to simulate, e.g. A100-80GB")
    main(ap.parse_args().simulate)
