"""Issue 42 (item 2): the reference's task semantics under every executor. A task runs in a node process, so its
arguments and result are copies and the Image's env applies, whether the node runs its tasks in threads or in
processes; `Local(inline=True)` is the one way back to threads of the caller. Also `Executor`, the 0.11+
spelling of `Worker`, and `Compute(cpus=, memory_gb=)` checked against this machine."""

import os
import threading
import time

import pool_tasks as T
import pytest

import migpool
from migpool import Compute, Image, Local, PluginError, Worker, gather
from migpool.pool.api.machine import memory_gb, usable_cpus
from migpool.pool.api.providers import Executor


@migpool.function
def append_one(xs):
    xs.append(1)
    return xs


@migpool.function
def env_of(*names):
    return {n: os.environ.get(n) for n in names}


@migpool.function
def thread_and_pid(sleep):
    time.sleep(sleep)
    return os.getpid(), threading.get_ident()


_met: dict[int, threading.Barrier] = {}


@migpool.function
def meet(parties):
    """Wait (in the worker process) until `parties` tasks are here at once; BrokenBarrierError if they never are."""
    barrier = _met.setdefault(parties, threading.Barrier(parties))
    barrier.wait(timeout=30)
    return os.getpid(), threading.get_ident()


EXECUTORS = [Executor(type="thread", concurrency=2), Executor(type="process", concurrency=2)]


@pytest.mark.parametrize("executor", EXECUTORS, ids=lambda e: e.type)
def test_arguments_and_results_are_copies_under_every_executor(executor):
    mine = [0]
    with Compute(executor=executor, progress=False) as c:
        got = append_one(mine) >> c
        pids = {pid for pid, _ in gather(*[thread_and_pid(0.0) for _ in range(4)]) >> c}
    assert mine == [0]  # the caller's list is untouched
    assert got == [0, 1] and got is not mine
    assert os.getpid() not in pids  # the tasks ran in node processes, not in the caller


@pytest.mark.parametrize("executor", EXECUTORS, ids=lambda e: e.type)
def test_image_env_applies_under_every_executor_and_may_name_anything(executor):
    env = {"MY_VAR": "it works", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "7", "PYTHONPATH": "/extra"}
    with Compute(executor=executor, image=Image(env=env), progress=False) as c:
        got = env_of("MY_VAR", "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES", "PYTHONPATH") >> c
    assert got["MY_VAR"] == "it works" and got["PYTHONUNBUFFERED"] == "1"
    assert got["CUDA_VISIBLE_DEVICES"] == "7"  # no plugin pins a device here: the user's value wins
    assert got["PYTHONPATH"].split(os.pathsep)[-1] == "/extra"  # after migpool's paths, which the worker needs


def test_migpool_pins_its_own_variables_over_the_image():
    env = {"MIGPOOL_NODE_INDEX": "9", "MIGPOOL_THREADS": "50"}
    with Compute(executor=Executor(concurrency=2), image=Image(env=env), progress=False) as c:
        got = env_of("MIGPOOL_NODE_INDEX", "MIGPOOL_THREADS") >> c
    assert got == {"MIGPOOL_NODE_INDEX": "0", "MIGPOOL_THREADS": "2"}


def test_thread_executor_runs_concurrency_tasks_at_once_in_one_node_process():
    with Compute(executor=Executor(concurrency=3), progress=False) as c:
        rs = gather(*[meet(3) for _ in range(3)]) >> c  # each waits for the other two: all three run at once
        assert c.concurrency == 3 and c.current_nodes() == 1
    assert len({pid for pid, _ in rs}) == 1 and len({tid for _, tid in rs}) == 3


def test_nodes_under_the_thread_executor_are_processes_of_their_own():
    with Compute(nodes=2, executor=Executor(concurrency=2), progress=False) as c:
        infos = T.where() @ c
        assert c.current_nodes() == 2
    assert [r["info"].node for r in infos] == [0, 1] and len({r["pid"] for r in infos}) == 2


def test_inline_is_the_callers_threads_and_shares_objects():
    mine = [0]
    with Compute(provider=Local(inline=True), executor=Executor(concurrency=2), progress=False) as c:
        assert (append_one(mine) >> c) is mine and (T.where() >> c)["pid"] == os.getpid()
    assert mine == [0, 1]
    with pytest.raises(PluginError, match="inline=True"):
        Compute(provider=Local(inline=True), executor=Executor(type="process"))


def test_executor_fields_and_refusals():
    assert Executor().worker() == Worker(concurrency=None, buffer=0, executor="thread")
    assert Executor(type="loky", concurrency=2, preload=("json",)).worker().executor == "process"
    assert Worker(preload=["json"]).preload == ["json"]
    with pytest.raises(PluginError, match="reuse=False"):
        Executor(reuse=False)
    with pytest.raises(PluginError, match="'thread', 'process' or 'loky'"):
        Executor(type="fork")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="concurrency must be"):
        Executor(concurrency=0)
    with pytest.raises(PluginError, match="preload takes a list"):
        Executor(preload="numpy")
    with pytest.raises(PluginError, match="not both"):
        Compute(executor=Executor(), worker=Worker())
    with Compute(executor=Executor(type="process", reuse=False, concurrency=2), progress=False) as c:
        assert len({r["pid"] for r in gather(*[T.where() for _ in range(3)]) >> c}) == 3


def test_cpus_and_memory_are_checked_against_this_machine():
    with pytest.raises(PluginError, match=f"this machine gives this process {usable_cpus()}") as e:
        with Compute(cpus=usable_cpus() + 1):
            pass
    assert "\n" not in str(e.value)
    with pytest.raises(PluginError, match="memory_gb=100000, but this machine has") as e:
        with Compute(memory_gb=100_000):
            pass
    assert "\n" not in str(e.value)
    with pytest.raises(PluginError, match="cpus must be a number"):
        with Compute(cpus="four"):  # type: ignore[arg-type]
            pass
    with Compute(cpus=1, memory_gb=int(memory_gb() / 2) or 0.5, progress=False) as c:
        assert (T.add(1, 2) >> c) == 3


def test_streams_and_iterator_arguments_under_the_thread_executor():
    with Compute(executor=Executor(concurrency=2), progress=False) as c:
        a = c.submit(T.count_up, 50).result()  # a generator task: its items as they come
        b = c.submit(T.squares_of, iter(range(5))).result()  # an iterator argument, read as the task asks
        rest = gather(*[T.add(i) for i in range(4)]) >> c
        assert list(a) == list(range(50)) and list(b) == [0, 1, 4, 9, 16] and list(rest) == [0, 1, 2, 3]
        with pytest.raises(T.Boom, match="failed at 3"):
            list(c.submit(T.fail_at, 10, 3).result())
        assert c.submit(T.running_sum, iter(range(10))).result() == 45


def test_a_timeout_under_the_thread_executor_ends_its_node_process_and_says_so():
    from migpool import TaskTimeoutError, WorkerLostError

    with Compute(executor=Executor(concurrency=2), progress=False) as c:
        late = c.submit(T.nap(30).with_timeout(1.0))
        beside = c.submit(T.nap, 30)
        with pytest.raises(TaskTimeoutError, match="timeout of 1.0s"):
            late.result(timeout=60)
        with pytest.raises(WorkerLostError):
            beside.result(timeout=60)
        assert (T.add(1, 1) >> c) == 2  # the node process was started again
