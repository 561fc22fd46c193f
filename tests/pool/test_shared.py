"""Pool-wide collections (migpool.dict, set, counter, queue, barrier, lock): the state's rules without any process,
then from the workers of a real pool, a thread pool and the parent."""

import os
import signal
import threading
import time

import pytest

import migpool
from migpool import Compute, Worker
from migpool.pool.shared.state import TIMED_OUT, Caller, SharedState, Waiter


class Calls:
    """Calls on a SharedState as one holder, recording each answer."""

    def __init__(self, state, pid=1, thread=1):
        self.state, self.holder, self.answers, self.n = state, Caller(pid, thread), {}, 0

    def __call__(self, kind, name, op, *args):
        cid = self.n = self.n + 1
        self.state.call(
            Waiter(self.holder, cid, lambda ok, v: self.answers.__setitem__(cid, (ok, v))), kind, name, op, args
        )
        return cid

    def now(self, kind, name, op, *args):
        cid = self(kind, name, op, *args)
        assert cid in self.answers, f"{kind}.{op} waited"
        return self.answers[cid]


def test_state_queue_is_fifo_and_a_waiting_get_takes_the_next_put():
    s = SharedState()
    a, b = Calls(s, 1), Calls(s, 2)
    a.now("queue", "q", "put", b"1")
    a.now("queue", "q", "put", b"2")
    assert b.now("queue", "q", "get", True) == (True, b"1")
    assert b.now("queue", "q", "get", True) == (True, b"2")
    assert b.now("queue", "q", "get", False) == (True, None)  # no wait: nothing there
    first, second = b("queue", "q", "get", True), a("queue", "q", "get", True)
    assert first not in b.answers and second not in a.answers
    a.now("queue", "q", "put", b"x")
    assert b.answers[first] == (True, b"x") and second not in a.answers  # in the order they asked
    assert s.withdraw(a.holder, second) and a.answers[second] == (True, TIMED_OUT)
    a.now("queue", "q", "put", b"y")
    assert a.now("queue", "q", "len") == (True, 1)  # the withdrawn get took nothing
    assert not s.withdraw(b.holder, first)  # answered already: its item stays its own


def test_state_barrier_releases_all_parties_at_the_last_arrival_and_starts_again():
    s = SharedState()
    c = [Calls(s, pid) for pid in (1, 2, 3)]
    w0, w1 = c[0]("barrier", "b", "wait", 3), c[1]("barrier", "b", "wait", 3)
    assert not c[0].answers and not c[1].answers
    assert c[2].now("barrier", "b", "wait", 3) == (True, 2)
    assert {c[0].answers[w0][1], c[1].answers[w1][1], 2} == {0, 1, 2}
    again = c[0]("barrier", "b", "wait", 3)  # the next round waits again
    assert again not in c[0].answers
    ok, refusal = c[1].now("barrier", "b", "wait", 2)
    assert not ok and refusal.kind == "ValueError" and "same n" in refusal.message


def test_state_lock_is_exclusive_handed_on_in_turn_and_freed_when_its_holder_dies():
    s = SharedState()
    a, b, c = Calls(s, 1), Calls(s, 2), Calls(s, 3)
    assert a.now("lock", "l", "acquire", True) == (True, True)
    assert b.now("lock", "l", "acquire", False) == (True, False)
    wb, wc = b("lock", "l", "acquire", True), c("lock", "l", "acquire", True)
    ok, refusal = c.now("lock", "l", "release")
    assert not ok and "does not hold" in refusal.message
    assert a.now("lock", "l", "release") == (True, None)
    assert b.answers[wb] == (True, True) and wc not in c.answers
    s.gone(2)  # b's process died holding it: c gets it
    assert c.answers[wc] == (True, True)
    ok, refusal = c.now("lock", "l", "acquire", True)
    assert not ok and "not reentrant" in refusal.message


def test_state_refusals_name_what_was_wrong():
    s = SharedState()
    a = Calls(s)
    assert a.now("dict", "d", "delete", "k")[1].kind == "KeyError"
    assert a.now("dict", "d", "put", ["unhashable"], b"")[1].kind == "TypeError"
    assert a.now("counter", "c", "add", 1.5)[1].kind == "TypeError"
    assert "no operation" in a.now("counter", "c", "frobnicate")[1].message
    assert a.now("set", "s", "add", 1) == (True, True) and a.now("set", "s", "add", 1) == (True, False)


@migpool.function
def bump(times):
    c = migpool.counter("hits")
    for _ in range(times):
        c.increment()
    return os.getpid()


@migpool.function
def meet(name, n):
    return migpool.barrier(name, n).wait(timeout=30), os.getpid()


@migpool.function
def consume(timeout):
    return migpool.queue("work").get(timeout=timeout)


@migpool.function
def locked_add(key, times):
    """Read, pause, write: loses updates unless the pool lock makes it atomic."""
    d, lock = migpool.dict("totals"), migpool.lock("totals")
    for _ in range(times):
        with lock:
            v = d.get(key, 0)
            time.sleep(0.001)
            d[key] = v + 1


@migpool.function
def try_lock(timeout):
    try:
        migpool.lock("held", timeout=timeout).acquire()
    except TimeoutError as e:
        return str(e)
    return "acquired"


@migpool.function
def hold_and_die():
    migpool.lock("doomed").acquire()
    os.kill(os.getpid(), signal.SIGKILL)


@migpool.function
def read_proxy(d):
    """Calls from four threads of the task at once, and from the task itself meanwhile."""
    threads = [threading.Thread(target=lambda i=i: [d.update({f"t{i}": j}) for j in range(50)]) for i in range(4)]
    for t in threads:
        t.start()
    seen = [d["from-parent"] for _ in range(50)]
    for t in threads:
        t.join()
    return seen[-1]


def test_collections_from_the_workers_of_a_pool_and_from_the_parent():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as pool:
        pids = set(migpool.gather(*[bump(50) for _ in range(8)]) >> pool)
        assert len(pids) == 2 and pool.counter("hits").value == 400  # no increment lost, from both workers
        assert int(migpool.counter("hits")) == 400  # the module-level name finds the open pool here too

        got = set(migpool.gather(meet("b", 2), meet("b", 2)) >> pool)  # both must be in the barrier at once
        assert {i for i, _ in got} == {0, 1} and len({p for _, p in got}) == 2

        waiting = consume(30) > pool  # waits in the worker, on an empty queue, until the parent puts
        time.sleep(0.3)
        assert not waiting.done()
        pool.queue("work").put({"job": 7})
        assert waiting.result(timeout=30) == {"job": 7}
        t = time.monotonic()
        assert (consume(0.3) >> pool) is None and time.monotonic() - t >= 0.3  # timed out: None
        pool.queue("work").put("later")
        assert pool.queue("work").get(timeout=5) == "later"  # the timed-out get took nothing

        migpool.gather(locked_add("k", 40), locked_add("k", 40)) >> pool
        assert pool.dict("totals")["k"] == 80

        d = pool.dict("shared")
        d["from-parent"] = [1, 2]
        assert (read_proxy(d) >> pool) == [1, 2]  # a proxy sent to a task finds the pool there
        assert sorted(d.keys()) == ["from-parent", "t0", "t1", "t2", "t3"] and d["t3"] == 49
        with pytest.raises(KeyError):
            d["missing"]


def test_a_lock_times_out_and_one_held_by_a_killed_worker_is_released():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as pool:
        lock = pool.lock("held")
        with lock:
            assert "not acquired within 0.2s" in (try_lock(0.2) >> pool)
        assert (try_lock(5) >> pool) == "acquired"
        with pytest.raises(migpool.WorkerLostError):
            hold_and_die() >> pool
        assert pool.lock("doomed", timeout=10).acquire()  # the dead worker's lock was released


def test_collections_on_a_thread_pool_and_outside_any_pool():
    with pytest.raises(RuntimeError, match="no pool is running here"):
        migpool.counter("x").increment()
    with Compute(worker=Worker(concurrency=2, executor="thread"), progress=False) as pool:
        migpool.gather(*[bump(25) for _ in range(4)]) >> pool
        assert pool.counter("hits").value == 100
    with pytest.raises(ValueError, match="consistency"):
        migpool.dict("d", consistency="sometimes")
    with pytest.raises(ValueError, match="n >= 1"):
        migpool.barrier("b", 0)
