"""The reference system's names: instance_info() fields, the task operators and shard()."""

import socket
from concurrent.futures import Future

import numpy as np
import pool_tasks as T
import pytest
from hypothesis import given
from hypothesis import strategies as st

import migpool as sky
from migpool import Compute, Worker, plugins


def test_instance_info_carries_the_reference_names(monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    with Compute(worker=Worker(concurrency=2), plugins=[plugins.mig(profile="3g.40gb")], progress=False) as c:
        infos = sorted(
            (r["info"] for r in sky.gather(T.where(), T.where(), T.where(), T.where()) >> c), key=lambda i: i.worker
        )
        parts = {p.uuid for p in c.partitions}
    workers = {i.worker: i for i in infos}
    assert sorted(workers) == [0, 1]
    for w, i in workers.items():
        assert (i.node, i.total_nodes, i.workers_per_node, i.total_workers) == (0, 1, 2, 2)
        assert i.global_worker_index == w and i.is_head and i.hostname == socket.gethostname()
        assert i.accelerators == 2 and i.partition.uuid in parts and i.partition.profile == "3g.40gb"
    outside = sky.instance_info()
    assert outside.worker is None and outside.global_worker_index is None and outside.is_head


def test_task_operators():
    with Compute(worker=Worker(concurrency=2), progress=False) as c:
        fut = T.add(2, 3) > c
        assert isinstance(fut, Future) and fut.result(timeout=30) == 5
        group = T.add(1) & T.nap(0.2, "slow") & T.add(3, 4)
        assert (group >> c) == (1, "slow", 7)  # in order, whatever finishes first
        a, b = (T.add(1, 1) & T.add(2, 2)) >> c
        assert (a, b) == (2, 4)
        assert (T.add(5) @ c) == [5]  # one node: one result
        with pytest.raises(T.Boom):
            (T.add(1) & T.fail("x")) >> c


def test_and_needs_tasks():
    with pytest.raises(TypeError):
        T.add(1) & 3


def test_shard_splits_lists_tuples_and_arrays():
    data = list(range(10))
    parts = [sky.shard(data, node=i, total_nodes=3) for i in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert sky.shard(tuple(data), node=1, total_nodes=3) == (4, 5, 6)
    arr = np.arange(20).reshape(10, 2)
    got = sky.shard(arr, node=2, total_nodes=3)
    assert isinstance(got, np.ndarray) and got.tolist() == arr[7:].tolist()
    assert [len(sky.shard(data, node=i, total_nodes=3, drop_last=True)) for i in range(3)] == [3, 3, 3]
    assert sky.shard(data) == data  # outside a pool: one node
    with pytest.raises(ValueError, match="node must be in 0..total_nodes-1"):
        sky.shard(data, node=3, total_nodes=3)
    with pytest.raises(TypeError, match="list, tuple or NumPy array"):
        sky.shard("abc", node=0, total_nodes=1)


@given(st.lists(st.integers(), max_size=60), st.integers(1, 7), st.booleans(), st.integers(0, 5), st.booleans())
def test_shards_partition_the_data(data, n, shuffle, seed, drop_last):
    parts = [sky.shard(data, node=i, total_nodes=n, shuffle=shuffle, seed=seed, drop_last=drop_last) for i in range(n)]
    flat = [x for p in parts for x in p]
    kept = len(data) - (len(data) % n if drop_last else 0)
    assert len(flat) == kept and max(map(len, parts)) - min(map(len, parts)) <= (0 if drop_last else 1)
    if not drop_last:
        assert sorted(flat) == sorted(data)  # every item exactly once
    if not shuffle:
        assert flat == data[:kept]  # in order
