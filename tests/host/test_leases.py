"""migpool.host.leases: a pool's lease on its partitions; regressions that once broke migpool (issue 22)."""

from __future__ import annotations

import multiprocessing
import queue

import pytest

import migpool
from migpool import Compute, Worker, plugins


def _race(monkeypatch, first: str, second: str, rounds: int) -> list[tuple]:
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=120)
    results = ctx.Queue()
    import racers

    procs = [ctx.Process(target=racers.race, args=(p, rounds, barrier, results)) for p in (first, second)]
    for p in procs:
        p.start()
    got = []
    try:
        for _ in range(2 * rounds):
            got.append(results.get(timeout=180))
    except queue.Empty:
        pass
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    assert len(got) == 2 * rounds, f"the racers reported {len(got)} of {2 * rounds} rounds"
    return got


@pytest.mark.parametrize(("first", "second"), [("3g.40gb", "2g.20gb"), ("1g.10gb", "1g.10gb")])
def test_two_pools_started_at_the_same_instant_never_share_or_lose_partitions(monkeypatch, first, second):
    """Two processes, released by a barrier 20 times, each open a pool on GPU 0. Before leases, the second
    pool's apply destroyed the first one's fresh partitions (which then ran its tasks on MIG UUIDs that no longer
    existed), and two pools of one profile shared the same partitions. Now in each round exactly one opens, on
    partitions that exist while it runs, and the other is refused with the holder named."""
    got = _race(monkeypatch, first, second, rounds=20)
    assert [r for r in got if r[2] == "error"] == []
    for k in range(20):
        rows = [r for r in got if r[0] == k]
        opened = [r for r in rows if r[2] == "open"]
        refused = [r for r in rows if r[2] == "refused"]
        assert len(opened) == 1 and len(refused) == 1, rows
        assert opened[0][3], "the pool that opened ran its tasks somewhere"
        assert opened[0][4] == [], f"round {k}: tasks ran on partitions that did not exist: {opened[0][4]}"
        assert "is leased by PID" in refused[0][5] and "since" in refused[0][5]


def test_a_pool_waits_for_a_leased_partition_when_asked(monkeypatch):
    """mig(wait=seconds): the second pool waits for the first one's partitions instead of being refused."""
    import threading
    import time

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    first = Compute(worker=Worker(executor="process"), plugins=[plugins.mig(profile="3g.40gb")], progress=False)
    first.__enter__()
    assert first.submit(lambda: 1).result() == 1
    with pytest.raises(migpool.LeasedError, match="leased by PID"):
        with Compute(
            worker=Worker(executor="process"), plugins=[plugins.mig(profile="3g.40gb", exclusive=True)], progress=False
        ):
            pass
    closer = threading.Timer(1.0, first.close)
    closer.start()
    t0 = time.monotonic()
    try:
        with Compute(
            worker=Worker(executor="process"),
            plugins=[plugins.mig(profile="3g.40gb", wait=30, exclusive=True)],
            progress=False,
        ) as second:
            assert second.submit(lambda: 2).result() == 2
        assert time.monotonic() - t0 >= 0.9
    finally:
        closer.join()


def test_a_dead_holders_leases_end_with_it(monkeypatch, sim, tmp_path):
    """A lease is a kernel lock: a pool killed with SIGKILL leaves nothing that blocks the next one."""
    import scripts

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    proc = scripts.start(
        "from migpool import Compute, Worker, plugins\n"
        "with Compute(worker=Worker(executor='process'), plugins=[plugins.mig(profile='3g.40gb')], progress=False)"
        " as p:\n"
        "    p.submit(lambda: 1).result(); print('up', flush=True); import time; time.sleep(600)\n",
        "up",
    )
    b = sim()
    try:
        with pytest.raises(migpool.LeasedError):
            migpool.apply({"1g.10gb": 7}, b)
    finally:
        proc.kill()
        proc.wait()
    import time

    deadline = time.monotonic() + 10
    while True:  # the lease ended at once; its workers notice their parent's death and exit soon after
        try:
            migpool.apply({"1g.10gb": 7}, b)
            break
        except migpool.LeasedError:  # a lease that outlived its holder: the failure this test is for
            raise
        except migpool.InUseError:  # a worker not yet gone
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
