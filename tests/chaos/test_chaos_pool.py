"""Fault injection on a pool: workers killed with SIGKILL at random moments (busy, waiting on a queue, holding a
daemon they left), garbage frames written on a worker's channel, tasks of every kind in flight. After each round:
every future resolved within the bound, no queue item delivered twice and none lost to a waiter that was killed,
every process of the round gone once the pool closed (daemons that left their session included)."""

import os
import random
import signal
import time
from concurrent.futures import CancelledError, wait

import pytest
from chaos_tasks import consume, count_up, leave_daemon, work
from containment_tasks import garbage
from faults import rounds

import migpool
from migpool import Compute, Worker

BOUND_S = 60  # every future of a round resolves within this
pytestmark = pytest.mark.chaos


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2][:1] not in ("Z", "X")
    except OSError:
        return False


def _gone(pids, within=10.0):
    end = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.02)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("seed", rounds(3))
def test_a_pool_under_random_worker_kills_keeps_its_invariants(seed):
    rng = random.Random(seed)
    seen_pids: set[int] = set()
    items = list(range(12))
    with Compute(worker=Worker(concurrency=3, executor="process"), progress=False, retries=0) as pool:
        q = pool.queue("chaos")
        futures = []
        for i in range(rng.randint(8, 16)):
            kind = rng.choice(["work", "work", "consume", "daemon", "stream", "garbage"])
            if kind == "work":
                futures.append(("work", pool.submit(work(i, rng.uniform(0, 0.2)))))
            elif kind == "consume":
                futures.append(("consume", pool.submit(consume("chaos", f"c{i}"))))
            elif kind == "daemon":
                futures.append(("daemon", pool.submit(leave_daemon(rng.uniform(0, 0.5)))))
            elif kind == "garbage":  # a task that writes a bad frame on its worker's channel
                futures.append(("garbage", pool.submit(garbage, rng.choice(["huge", "descriptors", "body"]))))
            else:
                futures.append(("stream", pool.submit(count_up(rng.randint(1, 50)))))
        for _ in range(rng.randint(1, 4)):  # faults: kill a worker (any, or one that waits on the queue)
            time.sleep(rng.uniform(0, 0.3))
            pids = [w.pid for w in pool.scheduler.workers if w.pid]
            waiting = [pid for _, pid in pool.dict("waiting").items()]
            victims = waiting if waiting and rng.random() < 0.5 else pids
            if victims:
                victim = rng.choice(victims)
                seen_pids.update(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for x in items:  # the items the consumers take, put after the faults began
            q.put(x)
        done, not_done = wait([f for _, f in futures], timeout=BOUND_S)
        assert not not_done, f"seed {seed}: {len(not_done)} futures unresolved after {BOUND_S} s"
        got = []
        for kind, f in futures:
            try:
                value = f.result(0)
            except (migpool.WorkerLostError, CancelledError, TimeoutError, migpool.TaskTimeoutError):
                continue
            except Exception as e:  # noqa: BLE001 - a queue's get that timed out is a task's own error
                assert kind == "consume", f"seed {seed}: {kind} failed: {e!r}"
                continue
            assert kind != "garbage", f"seed {seed}: a bad frame went unnoticed: {value!r}"
            if kind == "consume":
                got.append(value)
        assert len(got) == len(set(got)), f"seed {seed}: an item was delivered twice: {sorted(got)}"
        left = []
        while not q.empty():
            left.append(q.get(timeout=1))
        consumers_lost = sum(
            1 for kind, f in futures if kind == "consume" and isinstance(f.exception(0), migpool.WorkerLostError)
        )
        missing = set(items) - set(got) - set(left)
        # an item may go only with a consumer that died after it took it; never to one that was already dead
        assert len(missing) <= consumers_lost, f"seed {seed}: items lost {sorted(missing)}"
        daemons = [pid for _, pid in pool.dict("daemons").items()]
        seen_pids.update(w.pid for w in pool.scheduler.workers if w.pid)
    left_running = _gone(sorted(seen_pids | set(daemons)))
    assert left_running == [], f"seed {seed}: processes of the pool still running after close: {left_running}"
