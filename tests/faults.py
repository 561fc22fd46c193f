"""What the fault-injection suite (tests/chaos) shares: the seeds of its rounds.

CI runs a bounded number of rounds (MIGPOOL_FAULT_ROUNDS, else each test's default); `MIGPOOL_FAULT_ROUNDS=200
python -m pytest -m chaos tests/chaos` runs longer by hand. A failing round names its seed, and
MIGPOOL_FAULT_SEED=<seed> replays it alone."""

import os


def rounds(default: int) -> list[int]:
    """The seeds to run: $MIGPOOL_FAULT_SEED alone, else $MIGPOOL_FAULT_ROUNDS of them (else `default`)."""
    if os.environ.get("MIGPOOL_FAULT_SEED"):
        return [int(os.environ["MIGPOOL_FAULT_SEED"])]
    return list(range(int(os.environ.get("MIGPOOL_FAULT_ROUNDS", default))))
