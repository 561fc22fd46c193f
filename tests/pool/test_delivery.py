"""Regression tests (issue 41, failures 1, 3 and 4): nothing a pool's collections hand out goes to a dead process,
nothing a close cuts short ends silently, and a Ref works wherever a value travels or is refused where it is sent.

1. A worker waiting in a pool queue's `get` was killed and the parent put at once: the item was answered to the
   dead waiter and lost (30 of 30). A barrier of 2 completed with one party dead (10 of 10).
3. Closing a pool ended an unfinished stream as if it had finished: the consumer saw StopIteration.
4. A Ref inside an iterator argument's items, or sent through a pool queue, failed inside the task with a
   misleading LookupError ("not in this process").
"""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError

import pytest
from delivery_tasks import endless, meet, take, total, wait_for_item

import migpool
from migpool import Compute, Worker
from migpool.pool.shared.delivery import Lent, Liveness
from migpool.pool.shared.state import Caller, SharedState, Waiter
from migpool.pool.wire.messages import Answer
from migpool.pool.wire.protocol import channel, read_frame, write_frame

BOUND_S = 10  # no wait in these tests is longer


def _until(check, what, timeout=BOUND_S):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _pool(n=2):
    return Compute(worker=Worker(concurrency=n, executor="process"), progress=False)


# --- 1. nothing handed to the dead ---
def _waiting(pool, name, where):
    """The pid of the task that waits on `name` (a queue's get, a barrier) once the parent holds its call."""
    state = pool.scheduler.shared
    if where == "getters":
        _until(lambda: len(state.getters.get(name, ())) == 1, f"a get on {name}")
    else:
        _until(lambda: name in state.barriers and len(state.barriers[name].arrived) == 1, f"a party at {name}")
    return pool.dict("pids")[name]


def test_an_item_put_for_a_getter_killed_at_that_instant_goes_back_to_the_queue():
    with _pool() as pool:
        for i in range(5):
            name = f"q{i}"
            fut = wait_for_item(name) > pool
            pid = _waiting(pool, name, "getters")
            os.kill(pid, signal.SIGKILL)
            pool.queue(name).put({"item": i})  # at once: the parent has not yet seen the death
            with pytest.raises(migpool.WorkerLostError):
                fut.result(timeout=BOUND_S)
            assert pool.queue(name).get(timeout=5) == {"item": i}, f"round {i}: the item was handed to the dead"
            assert len(pool.queue(name)) == 0  # and it is there once, not twice


def test_a_barrier_with_a_party_killed_breaks_and_stays_broken_until_reset():
    with _pool() as pool:
        for i in range(3):
            name = f"b{i}"
            fut = meet(name) > pool
            pid = _waiting(pool, name, "barriers")
            os.kill(pid, signal.SIGKILL)
            barrier = pool.barrier(name, 2)
            t = time.monotonic()
            with pytest.raises(threading.BrokenBarrierError, match="died"):
                barrier.wait(timeout=5)  # at once, and never as if both had met
            assert time.monotonic() - t < 4
            with pytest.raises(migpool.WorkerLostError):
                fut.result(timeout=BOUND_S)
            with pytest.raises(threading.BrokenBarrierError):  # broken until reset, as threading.Barrier
                barrier.wait(timeout=5)
            barrier.reset()
            again = meet(name) > pool
            assert {barrier.wait(timeout=BOUND_S), again.result(timeout=BOUND_S)} == {0, 1}


class _Calls:
    """Calls on a SharedState as one holder whose process is alive while `alive[0]`."""

    def __init__(self, state, pid):
        self.state, self.holder, self.answers, self.n, self.alive = state, Caller(pid, 1), {}, 0, [True]

    def __call__(self, kind, name, op, *args):
        cid = self.n = self.n + 1

        def answer(ok, value):
            self.answers[cid] = (ok, value)

        self.state.call(Waiter(self.holder, cid, answer, lambda: self.alive[0]), kind, name, op, args)
        return cid


def test_state_skips_dead_waiters_and_takes_back_what_never_arrived():
    s = SharedState()
    dead, live, putter = _Calls(s, 1), _Calls(s, 2), _Calls(s, 3)
    first, second = dead("queue", "q", "get", True), live("queue", "q", "get", True)
    dead.alive[0] = False  # its process died; gone() has not come yet
    putter("queue", "q", "put", b"x")
    assert first not in dead.answers and live.answers[second] == (True, b"x")  # the live one got it
    s.give_back("q", b"x")  # ...which never reached its process: it goes back, to the front
    putter("queue", "q", "put", b"y")
    got = [live("queue", "q", "get", False) for _ in range(2)]
    assert [live.answers[c] for c in got] == [(True, b"x"), (True, b"y")]

    a, b = _Calls(s, 4), _Calls(s, 5)
    wa = a("barrier", "b", "wait", 2)
    a.alive[0] = False
    wb = b("barrier", "b", "wait", 2)
    ok, refusal = b.answers[wb]
    assert not ok and refusal.kind == "BrokenBarrierError" and "process 4" in refusal.message
    assert wa not in a.answers

    c, d = _Calls(s, 6), _Calls(s, 7)
    wc = c("barrier", "g", "wait", 2)
    s.gone(8)  # another process: no effect
    assert wc not in c.answers
    d("barrier", "g", "wait", 3)  # (the wrong n is refused, not counted)
    s.gone(6)
    wd = d("barrier", "g", "wait", 2)
    assert d.answers[wd][1].kind == "BrokenBarrierError"
    d("barrier", "g", "reset")
    wc, wd = c("barrier", "g", "wait", 2), d("barrier", "g", "wait", 2)
    assert {c.answers[wc], d.answers[wd]} == {(True, 0), (True, 1)}

    e, f = _Calls(s, 9), _Calls(s, 10)
    assert (e("lock", "l", "acquire", True), e.answers[1]) == (1, (True, True))
    wf = f("lock", "l", "acquire", True)
    f.alive[0] = False
    g = _Calls(s, 11)
    wg = g("lock", "l", "acquire", True)
    e("lock", "l", "release")
    assert wf not in f.answers and g.answers[wg] == (True, True)  # the lock skipped the dead waiter


def test_an_answer_its_reader_never_read_is_taken_back_and_one_it_read_is_not():
    r, w = channel()
    lent, back = Lent(w.fd), []
    try:
        for cid in range(3):
            lent.wrote(write_frame(w, Answer(cid, True, b"item %d" % cid)), lambda cid=cid: back.append(cid))
        assert read_frame(r).cid == 0  # the reader took the first answer whole...
        lent.wrote(write_frame(w, Answer(9, True, None)))  # (a frame that hands nothing over)
        os.read(r.fd, 5)  # ...and a few bytes of the second, then it died
        assert len(lent) == 2  # (the first one, read, is forgotten)
    finally:
        r.close()
    takeback = lent.unread()
    for undo in takeback:
        undo()
    assert back == [1, 2] and len(lent) == 0
    w.close()


def test_liveness_says_dead_from_the_instant_sigkill_is_sent_and_for_an_ended_process():
    code = "import sys, time; sys.stdout.write('up\\n'); sys.stdout.flush(); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"up\n"
        live = Liveness(p.pid)
        assert live.alive()
        os.kill(p.pid, signal.SIGKILL)
        assert not live.alive()  # before the process is gone (it takes milliseconds to die)
        p.wait(BOUND_S)
        assert not live.alive()  # a zombie, then reaped
        live.close()
        assert not live.alive()
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert not Liveness(p.pid).alive()  # (reaped before it was asked)


# --- 3. nothing ended silently ---
def test_a_stream_cut_by_closing_its_pool_raises_at_its_consumer():
    with _pool(1) as pool:
        stream = endless() >> pool
        assert [next(stream) for _ in range(20)] == list(range(20))
    with pytest.raises(CancelledError, match="pool was closed while this stream was unfinished"):
        next(stream)  # never StopIteration, as if the endless generator had ended


def test_a_consumer_reading_while_another_thread_closes_the_pool_gets_an_error():
    got, ended = [], []

    def consume(stream):
        try:
            for x in stream:
                got.append(x)
            ended.append("StopIteration")
        except CancelledError as e:
            ended.append(str(e))

    pool = _pool(1)
    pool.__enter__()
    reader = threading.Thread(target=consume, args=(endless() >> pool,))
    reader.start()
    _until(lambda: len(got) > 50, "items")
    pool.close()
    reader.join(BOUND_S)
    assert not reader.is_alive() and len(ended) == 1
    assert "unfinished" in ended[0] and got == list(range(len(got)))


# --- 4. references wherever a value travels ---
def test_refs_inside_an_iterator_arguments_items_reach_the_task_as_their_values():
    with _pool(1) as pool:
        a, b = pool.put([1, 2, 3]), pool.put(list(range(100_000)))
        assert (total(iter([a, b, 7, a])) >> pool) == [6, sum(range(100_000)), 7, 6]
        gen = (r for r in [pool.put([10, 20])])  # a Ref whose only holder is the generator
        assert (total(gen) >> pool) == [30]
        with _pool(1) as other:
            foreign = other.put([1])
            with pytest.raises(migpool.PluginError, match="another pool"):
                total(iter([foreign])) >> pool


def test_a_ref_sent_through_a_collection_is_refused_by_the_sender_in_one_line():
    with _pool(1) as pool:
        ref = pool.put([1, 2, 3])
        for send in (lambda: pool.queue("q").put({"data": ref}), lambda: pool.dict("d").__setitem__("k", [ref])):
            with pytest.raises(TypeError) as e:
                send()
            assert "\n" not in str(e.value) and "Ref" in str(e.value) and "task's argument" in str(e.value)
        assert len(pool.queue("q")) == 0 and "k" not in pool.dict("d")
        pool.queue("q").put([1, 2, 3])  # the value itself travels
        assert (take("q") >> pool) == [1, 2, 3]
