"""The reference system's names: instance_info() fields, the task operators and shard()."""

import contextlib
import dataclasses
import functools
import os
import socket
import sys
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pool_tasks as T
import pytest
from hypothesis import given
from hypothesis import strategies as st

import migpool as sky
from migpool import Compute, Worker, plugins


def test_instance_info_carries_the_reference_names(monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    with Compute(
        worker=Worker(concurrency=2, executor="process"), plugins=[plugins.mig(profile="3g.40gb")], progress=False
    ) as c:
        infos = sorted(
            (r["info"] for r in sky.gather(T.where(), T.where(), T.where(), T.where()) >> c), key=lambda i: i.worker
        )
        parts = {p.uuid for p in c.partitions}
    workers = {i.worker: i for i in infos}
    assert sorted(workers) == [0, 1]
    for w, i in workers.items():
        assert (i.node, i.total_nodes, i.workers_per_node, i.total_workers) == (0, 1, 2, 2)
        assert i.global_worker_index == w and i.is_head and i.hostname == socket.gethostname()  # node 0: the head
        assert i.accelerators == i.total_accelerators == 2 and i.partition.uuid in parts
        assert i.accelerator == {"type": "3g.40gb", "count": 2, "memory_gb": i.partition.memory_mib / 1024}
        assert i.head_addr == "127.0.0.1" and i.head_port > 0 and len(i.job_id) == 12
        assert i.peers == [{"node": 0, "private_ip": "127.0.0.1", "public_ip": None}]
    assert len({(i.job_id, i.head_port) for i in infos}) == 1  # one pool: the same everywhere
    outside = sky.instance_info()
    assert outside.worker is None and outside.global_worker_index is None and outside.is_head


def test_task_operators():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as c:
        fut = T.add(2, 3) > c
        assert isinstance(fut, Future) and fut.result(timeout=30) == 5
        group = T.add(1) & T.nap(0.2, "slow") & T.add(3, 4)
        assert (group >> c) == [1, "slow", 7]  # in order, whatever finishes first (a list, as in 0.12)
        a, b = (T.add(1, 1) & T.add(2, 2)) >> c
        assert (a, b) == (2, 4)
        assert (T.add(5) @ c) == [5]  # one node: one result
        with pytest.raises(T.Boom):
            (T.add(1) & T.fail("x")) >> c


def test_and_needs_tasks():
    with pytest.raises(TypeError):
        T.add(1) & 3


def test_shard_splits_lists_tuples_and_arrays_as_the_reference_does():
    data = list(range(10))
    parts = [sky.shard(data, node=i, total_nodes=3) for i in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]  # contiguous blocks [len*r//n, len*(r+1)//n), as 0.12.1
    assert sky.shard(tuple(data), node=1, total_nodes=3) == (3, 4, 5)
    assert sky.shard(range(10), node=1, total_nodes=3) == [3, 4, 5]  # another sequence: a list
    arr = np.arange(20).reshape(10, 2)
    got = sky.shard(arr, node=2, total_nodes=3)
    assert isinstance(got, np.ndarray) and got.tolist() == arr[[6, 7, 8, 9]].tolist()
    blocks = [sky.shard(data, node=i, total_nodes=3, drop_last=True) for i in range(3)]
    assert blocks == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # equal contiguous blocks, the tail dropped
    assert sky.shard(data) == data  # outside a pool: one node
    with pytest.raises(ValueError, match="node must be in 0..total_nodes-1"):
        sky.shard(data, node=3, total_nodes=3)
    with pytest.raises(TypeError, match="not set"):
        sky.shard({1, 2}, node=0, total_nodes=1)
    with pytest.raises(ValueError, match="at least one sequence"):
        sky.shard()


def test_shard_cuts_several_sequences_with_the_same_positions():
    x = np.arange(50) * 10
    y = [str(i) for i in range(50)]
    seen = []
    for node in range(4):
        xs, ys = sky.shard(x, y, shuffle=True, seed=42, node=node, total_nodes=4)
        assert isinstance(xs, np.ndarray) and isinstance(ys, list)
        assert [int(v) // 10 for v in xs] == [int(v) for v in ys]  # aligned: the same positions in both
        seen += ys
    assert sorted(seen, key=int) == y  # together the nodes hold everything once
    assert (
        sky.shard(x, y, node=0, total_nodes=4, shuffle=True, seed=42)[1]
        != sky.shard(x, y, node=0, total_nodes=4, shuffle=True, seed=7)[1]
    )


def test_shard_cuts_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.arange(12).reshape(6, 2)
    got = sky.shard(t, node=1, total_nodes=2)
    assert isinstance(got, torch.Tensor) and got.tolist() == t[[3, 4, 5]].tolist()


@given(st.lists(st.integers(), max_size=60), st.integers(1, 7), st.booleans(), st.integers(0, 5), st.booleans())
def test_shards_partition_the_data(data, n, shuffle, seed, drop_last):
    parts = [sky.shard(data, node=i, total_nodes=n, shuffle=shuffle, seed=seed, drop_last=drop_last) for i in range(n)]
    flat = [x for p in parts for x in p]
    if drop_last:
        assert [len(p) for p in parts] == [len(data) // n] * n
    else:
        assert sorted(flat) == sorted(data)  # every item exactly once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    if not shuffle:
        if drop_last:
            assert flat == data[: len(data) // n * n]
        else:
            assert parts == [data[len(data) * i // n : len(data) * (i + 1) // n] for i in range(n)]


@sky.function
def node_part(data):
    info = sky.instance_info()
    mine = sky.shard(data)
    sky.counter("rows").increment(len(mine))
    arrived = sky.barrier("all-nodes", info.total_nodes).wait(timeout=60)
    return {"info": info, "sum": sum(mine), "arrived": arrived, "pid": __import__("os").getpid()}


def test_several_nodes_on_one_machine_behave_as_several_machines():
    data = list(range(1000))
    with Compute(provider=sky.Local(), nodes=4, worker=Worker(concurrency=2, executor="process"), progress=False) as c:
        assert c.current_nodes() == 4 and c.concurrency == 2
        per_node = node_part(data) @ c  # broadcast: once on every node, all of them in the barrier at once
        everywhere = sky.gather(*[T.where() for _ in range(16)]) >> c
        rows = c.counter("rows").value
    assert [r["info"].node for r in per_node] == [0, 1, 2, 3]
    assert sum(r["sum"] for r in per_node) == sum(data) and rows == len(data)  # the shards cover the data once
    assert sorted(r["arrived"] for r in per_node) == [0, 1, 2, 3] and len({r["pid"] for r in per_node}) == 4
    for r in per_node:
        i = r["info"]
        assert (i.total_nodes, i.workers_per_node, i.total_workers) == (4, 2, 8)
        assert i.is_head == (i.node == 0) == (i.rank == 0) and len(i.peers) == 4  # the head node (0.12's rule)
    indices = {r["info"].global_worker_index for r in everywhere}
    assert indices <= set(range(8)) and len({r["info"].node for r in everywhere}) > 1


def test_several_nodes_share_the_machines_mig_partitions(monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    with Compute(
        nodes=2,
        worker=Worker(executor="process"),
        plugins=[plugins.mig(profile="2g.20gb", count="all", restore=True)],
        progress=False,
    ) as c:
        parts = c.partitions
        per_node = T.where() @ c
    assert [p.node for p in parts] == [0, 0, 1]  # three 2g.20gb split over two nodes, in order
    for r in per_node:
        i = r["info"]
        assert i.partition.node == i.node and r["initial_cuda"] == i.partition.uuid
        assert i.accelerators == (2 if i.node == 0 else 1) and i.total_workers == 3
    with pytest.raises(sky.PluginError, match="every node needs one"):
        with Compute(nodes=4, worker=Worker(executor="process"), plugins=[plugins.mig(profile="3g.40gb", count="all")]):
            pass
    with pytest.raises(sky.PluginError, match="dynamic MIG runs one node per machine"):
        with Compute(nodes=2, worker=Worker(executor="process"), plugins=[plugins.mig(dynamic=True)]):
            pass


@pytest.mark.parametrize("name", ["AWS", "GCP", "Azure", "RunPod", "VastAI", "Container"])
def test_the_reference_clouds_exist_and_refuse_with_what_to_do(name):
    provider = getattr(sky, name)(region="anywhere")
    with pytest.raises(sky.PluginError) as e:
        Compute(provider=provider)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"provider={name}()")
    assert ("nodes=N" in text) if name == "Container" else ("migpool.Ray(address=" in text and "deploy/ray/" in text)


@contextlib.contextmanager
def _marks(info):
    os.environ["AROUND_WORKER"] = f"{info.worker}"
    yield
    Path(os.environ["AROUND_LOG"]).open("a").write(f"left {info.worker}\n")


def _twice(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return ("decorated", fn(*a, **k))

    return wrapper


@sky.function
def around_seen(x):
    return os.environ.get("AROUND_WORKER"), x


def test_plugins_built_with_the_reference_builder(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("AROUND_LOG", str(log))
    calls = []

    @contextlib.contextmanager
    def client(pool, node):
        calls.append(("enter", pool.is_active))
        yield
        calls.append(("exit",))

    plugin = (
        sky.plugins.Plugin.create("marks")
        .with_image_transform(lambda image, cluster: dataclasses.replace(image, env={**image.env, "FROM_IMAGE": "1"}))
        .with_bootstrap(lambda node: [lambda: calls.append(("bootstrap",)), [sys.executable, "-c", "pass"]])
        .with_decorator(_twice)
        .with_around_process(_marks)
        .with_around_client(client)
    )
    with Compute(worker=Worker(concurrency=2), plugins=[plugin], progress=False) as c:
        assert c.executor == "process"  # a process context: processes
        got = sky.gather(around_seen(1), around_seen(2)) >> c
        env = c.submit(lambda: os.environ.get("FROM_IMAGE")).result()
    assert got == [("decorated", (got[0][1][0], 1)), ("decorated", (got[1][1][0], 2))]
    assert {g[1][0] for g in got} <= {"0", "1"} and env == ("decorated", "1")
    assert calls == [("bootstrap",), ("enter", True), ("exit",)]
    assert sorted(log.read_text().split("\n")[:-1]) == ["left 0", "left 1"]  # each worker left its context
    with pytest.raises(sky.PluginError, match="runs no shell strings"):
        with Compute(plugins=[sky.plugins.Plugin.create("sh").with_bootstrap(lambda node: "apt-get install x")]):
            pass
    with pytest.raises(sky.PluginError, match="with_launcher"):
        sky.plugins.Plugin.create("l").with_launcher(lambda c: c)
    with pytest.raises(sky.PluginError, match="exited with code 3"):
        bad = sky.plugins.Plugin.create("b").with_bootstrap(lambda node: [[sys.executable, "-c", "exit(3)"]])
        with Compute(plugins=[bad]):
            pass
