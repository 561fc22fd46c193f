"""Large values through shared memory, values stored once for many tasks (put), and streaming tasks.

Segments are memfds named "migpool": the checks look for that name in every process's descriptors and mappings
(/proc/*/fd, /proc/*/maps), the memfd's equivalent of listing /dev/shm.
"""

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pool_tasks as T
import pytest

import migpool
from migpool import Compute, PluginError, Worker, WorkerLostError

np = pytest.importorskip("numpy")
MiB = 1 << 20


def segments_anywhere() -> dict[int, int]:
    """pid -> how many migpool segments it has open or mapped, for every process that has any."""
    out: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        n = 0
        try:
            for fd in (proc / "fd").iterdir():
                try:
                    n += "memfd:migpool" in os.readlink(fd)
                except OSError:
                    continue
            n += (proc / "maps").read_text().count("memfd:migpool")
        except OSError:
            continue
        if n:
            out[int(proc.name)] = n
    return out


def no_segments_left(pids=(), timeout=10.0, mine=True) -> dict[int, int]:
    """Wait until none of `pids` (and, with `mine`, not this process) holds a segment; what is left."""
    deadline = time.monotonic() + timeout
    watched = set(pids) | ({os.getpid()} if mine else set())
    while True:
        gc.collect()
        left = {p: n for p, n in segments_anywhere().items() if p in watched}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def pool():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as c:
        yield c
    assert no_segments_left(c.worker_pids) == {}


def test_a_large_array_arrives_backed_by_shared_memory_with_its_flags(pool):
    a = np.arange(4 * MiB, dtype=np.float64)
    got = pool.submit(T.describe, a).result()
    assert got["sum"] == float(a.sum()) and got["writeable"] and not got["owndata"]
    ro = a.copy()
    ro.flags.writeable = False
    assert pool.submit(T.describe, ro).result()["writeable"] is False
    small = np.arange(10.0)  # in the pickle
    assert pool.submit(T.describe, small).result()["sum"] == 45.0


def test_a_large_result_comes_back_mapped_and_writable(pool):
    r = pool.submit(T.make_array, 2 * MiB, 3.0).result()
    assert r.shape == (2 * MiB,) and float(r.sum()) == 6.0 * MiB
    assert r.flags.writeable and not r.flags.owndata
    r[0] = 0  # the mapping is ours: writing works
    assert T.segments_here()[1] >= 1
    del r
    gc.collect()
    assert T.segments_here() == (0, 0)


def test_writes_to_an_argument_stay_in_the_task(pool):
    a = np.ones(MiB)
    total, (fds, maps) = pool.submit(T.write_and_report, a).result()
    assert total == -float(MiB) and fds == 0 and maps == 1  # mapped once, descriptor already closed
    assert float(a.sum()) == float(MiB)


def test_non_contiguous_arrays_nested_containers_and_buffers(pool):
    base = np.arange(3 * MiB, dtype=np.float32).reshape(1536, 2048)
    value = {
        "strided": base[::3, 1::2],
        "fortran": np.asfortranarray(base),
        "transposed": base.T,
        "list": [base[:10], (np.zeros(MiB, dtype=np.int8), b"tail")],
        "bytes": bytes(range(256)) * (8 * 1024),
        "bytearray": bytearray(b"\x01\x02") * MiB,
        "memoryview": memoryview(bytearray(b"\x07") * (2 * MiB)),
        "small memoryview": memoryview(b"abc"),
    }
    got = pool.submit(T.describe, value, False).result()
    assert got == T.describe(value, False)
    assert got["fortran"]["f"] and got["transposed"]["f"]


def test_memoryview_keeps_format_and_shape(pool):
    m = memoryview(np.arange(MiB, dtype=np.int32).reshape(1024, 1024))
    back = pool.submit(lambda v: (v.format, v.shape, v[3, 5]), m).result()
    assert back == ("i", (1024, 1024), 3 * 1024 + 5)


def test_torch_tensors_travel_as_their_bytes(pool):
    torch = pytest.importorskip("torch")
    t = torch.arange(2 * MiB, dtype=torch.float32).reshape(1024, -1)
    back = pool.submit(lambda x: x * 2, t).result()
    assert torch.equal(back, t * 2)
    bf = torch.ones(MiB, dtype=torch.bfloat16)
    assert torch.equal(pool.submit(lambda x: x, bf).result(), bf)
    strided = t[:, ::2]
    assert torch.equal(pool.submit(lambda x: x.contiguous(), strided).result(), strided)


def test_a_value_that_fails_to_pickle_half_way_is_refused_and_leaks_nothing(pool):
    import threading

    before = T.segments_here()
    with pytest.raises(TypeError, match="its arguments could not be pickled"):
        pool.submit(T.describe, [np.ones(4 * MiB), threading.Lock()])
    assert T.segments_here() == before
    with pytest.raises(TypeError, match="result could not be pickled"):
        pool.submit(lambda: [np.ones(4 * MiB), threading.Lock()]).result()
    assert pool.submit(T.add, 1, 2).result() == 3  # the pool goes on


def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{condition} not true within {seconds} s"
        time.sleep(0.02)


def test_a_worker_killed_while_a_large_argument_is_on_its_way_leaks_nothing(tmp_path):
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        pid = c.worker_pids[0]
        started = tmp_path / "started"
        busy = c.submit(T.hold_arg, np.zeros(1), 5.0, str(started))  # busy: the next frame waits in its socket
        wait_for(started.exists)
        fut = c.submit(T.hold_arg, np.ones(32 * MiB), 0.0)
        wait_for(fut.running)  # sent to the worker
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            busy.result(timeout=30)
        assert fut.result(timeout=30) == 32 * MiB * 8  # never started there: it ran on the new worker
        del fut
        workers = c.worker_pids
        assert no_segments_left(workers, mine=False) == {}
    assert no_segments_left([pid, *workers]) == {}  # the pool kept warm segments until it closed


def test_a_worker_killed_while_it_holds_a_mapped_argument_leaks_nothing():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        pid = c.worker_pids[0]
        fut = c.submit(T.hold_arg, np.ones(32 * MiB), 30.0)
        deadline = time.monotonic() + 10
        while segments_anywhere().get(pid, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert segments_anywhere().get(pid, 0) >= 1  # it has the argument mapped
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            fut.result(timeout=30)
        del fut
        workers = c.worker_pids
    assert no_segments_left([pid, *workers]) == {}


def test_the_parent_killed_mid_transfer_leaves_no_segment(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {str(Path(T.__file__).parent)!r})
            import numpy as np
            import pool_tasks as T
            from migpool import Compute, Worker
            with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as c:
                print(*c.worker_pids, flush=True)
                a = c.submit(T.hold_arg, np.ones(16 * 2**20), 60)
                b = c.submit(T.make_array, 16 * 2**20)
                r = b.result()
                print("ready", flush=True)
                time.sleep(60)
            """
        )
    )
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(x) for x in p.stdout.readline().split()]
    assert p.stdout.readline().strip() == "ready"
    assert p.pid in segments_anywhere()  # it holds the result's mapping and the argument's segment
    p.kill()
    p.wait()
    assert no_segments_left([p.pid, *workers], timeout=20) == {}


# --- put ---
def test_put_sends_a_value_to_each_worker_once_in_nested_arguments(pool):
    a = np.arange(2 * MiB, dtype=np.float64)
    ref = pool.put(a)
    assert isinstance(ref, migpool.Ref) and ref.nbytes >= a.nbytes
    got = [pool.submit(T.describe, {"x": [ref], "y": (ref,)}) for _ in range(6)]
    for g in got:
        d = g.result()
        assert d["x"][0]["sum"] == float(a.sum()) and d["x"][0]["writeable"] is False
    seen = [pool.submit(T.stored_ids, ref, [ref]).result() for _ in range(8)]
    by_worker: dict[int, set[int]] = {}
    for ids, held, pid in seen:
        assert ids[0] == ids[1] and held == 1
        by_worker.setdefault(pid, set()).add(ids[0])
    assert all(len(v) == 1 for v in by_worker.values())  # one copy per worker, kept between tasks
    scheduler = pool.scheduler
    assert all(w.sent_values == {ref.vid} for w in scheduler.workers if w.stats.pid in by_worker)


def test_a_dropped_ref_is_freed_in_the_pool_and_its_workers(pool):
    ref = pool.put(np.ones(4 * MiB))
    pids = {pool.submit(T.stored_ids, ref).result()[2] for _ in range(6)}
    vid = ref.vid
    del ref
    gc.collect()
    assert pool.submit(T.add, 0, 0).result() == 0  # the next submit frees it
    assert vid not in pool.scheduler.values
    for _ in range(6):
        _, held, _ = pool.submit(T.stored_ids).result()
        assert held == 0
    assert no_segments_left(pids, mine=False) == {}  # the workers unmapped it (the pool keeps it warm)


def test_a_ref_of_another_pool_is_refused(pool):
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as other:
        ref = other.put([1, 2, 3])
        assert other.submit(T.add, ref, [4]).result() == [1, 2, 3, 4]
    with pytest.raises(PluginError, match="another pool"):
        pool.submit(T.add, ref, [4])


# --- streams ---
def test_a_generator_task_streams_its_items(pool):
    gen = migpool.function(T.count_up)
    assert list(gen(50) >> pool) == list(range(50))
    fut = gen(5) > pool
    assert list(fut.result()) == [0, 1, 2, 3, 4]
    assert list(gen(0) >> pool) == []


def test_items_come_as_the_worker_yields_them_with_bounded_credit(pool, tmp_path):
    from migpool.pool.wire.streams import WINDOW

    log = tmp_path / "log"
    it = pool.submit(T.count_up, 10_000, str(log)).result()
    assert next(it) == 0
    time.sleep(1.0)  # the consumer waits: the worker stops once its credit is used
    produced = len(log.read_text().split())
    assert produced <= WINDOW + 2
    it.close()
    assert pool.submit(T.add, 1, 1).result() == 2


def test_stopping_early_frees_the_worker():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        for x in c.submit(T.count_up, 10**9).result():
            if x == 3:
                break
        assert c.submit(T.add, 2, 3).result(timeout=10) == 5
        it = c.submit(T.count_up, 10**9).result()
        next(it)
        del it  # dropped unread
        assert c.submit(T.add, 2, 4).result(timeout=10) == 6
        unread = c.submit(T.count_up, 10**9).result()  # never read: closing the pool stops it
    with pytest.raises(CancelledError, match="pool was closed while this stream was unfinished"):  # (issue 41: 3)
        next(unread)


def test_an_error_mid_stream_is_raised_where_it_happened(pool):
    got = []
    with pytest.raises(T.Boom, match="failed at 3"):
        for x in pool.submit(T.fail_at, 10, 3).result():
            got.append(x)
    assert got == [0, 1, 2]


def test_iterator_arguments_stream_to_the_task(pool):
    data = list(range(1000))
    assert pool.submit(T.running_sum, iter(data)).result() == sum(data)
    assert pool.submit(T.running_sum, (x for x in data)).result() == sum(data)
    assert pool.submit(T.running_sum, items=map(int, data)).result() == sum(data)
    assert list(pool.submit(T.squares_of, iter(range(100))).result()) == [x * x for x in range(100)]
    assert pool.submit(T.running_sum, [1, 2, 3]).result() == 6  # a list is a value, not a stream


def test_an_iterator_argument_is_read_lazily_and_its_error_reaches_the_task(pool):
    from migpool.pool.wire.streams import WINDOW

    pulled = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield i

    assert pool.submit(T.slow_reader, source(), 0.5).result() == 0
    assert len(pulled) <= 2 * WINDOW

    def broken():
        yield 1
        raise T.Boom("the source broke")

    with pytest.raises(T.Boom, match="the source broke"):
        pool.submit(T.running_sum, broken()).result()


def test_large_items_stream_through_shared_memory(pool):
    items = list(pool.submit(T.big_items, 5, MiB).result())
    assert [float(a[0]) for a in items] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not items[0].flags.owndata
    assert pool.submit(T.running_sum, (np.full(MiB, 1.0) for _ in range(3))).result().sum() == 3.0 * MiB


def test_a_stream_is_not_retried_once_it_delivered_items():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False, retries=2) as c:
        it = c.submit(T.count_up, 10**9).result()
        assert next(it) == 0
        os.kill(c.worker_pids[0], signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            for _ in it:
                pass


# --- warm segments ---
def test_a_segment_is_reused_once_its_receiver_let_go():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        rec = c.scheduler.codec.recycler
        for i in range(3):
            assert c.submit(T.describe, np.full(MiB, float(i))).result()["sum"] == i * MiB
        assert c.submit(T.add, 0, 0).result() == 0
        assert len(rec._given) + len(rec._free) == 1  # one segment served all three transfers


def test_a_value_the_worker_still_holds_is_never_overwritten():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        sums = [c.submit(T.keep_arg, np.full(MiB, float(i))).result() for i in range(4)]
        assert c.submit(T.kept_sums).result() == sums == [i * float(MiB) for i in range(4)]


def test_a_segment_mapped_when_a_task_forked_is_not_reused(tmp_path):
    out = tmp_path / "sum"
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        c.submit(T.fork_and_read_later, np.full(MiB, 1.0), str(out), 1.0).result()
        for _ in range(3):  # same size: a reused segment would change what the child reads
            c.submit(T.describe, np.full(MiB, 7.0)).result()
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert float(out.read_text() or "nan") == float(MiB)
