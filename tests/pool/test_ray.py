"""The pool on a Ray cluster: a local `ray.cluster_utils.Cluster` whose nodes simulate different GPUs."""

import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
import pool_tasks as T  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import migpool  # noqa: E402
import migpool.ray  # noqa: E402
from migpool import Compute, SimulatedBackend, Worker, gather, plugins  # noqa: E402
from migpool.reconcile import core as reconcile  # noqa: E402

TESTS = str(Path(__file__).parents[1])
SRC = str(Path(migpool.__file__).resolve().parents[1])
NODES = {  # name: (simulated GPUs, custom resources, extra environment)
    "a100": ("A100-80GB", {"ab": 1, "ad": 1, "abd": 1}, {}),
    "h100": ("H100-80GB:2", {"ab": 1, "abd": 1}, {}),
    "ro": ("A100-80GB", {"ro": 1}, {"MIGPOOL_READ_ONLY": "1"}),
    "gone": ("H100-80GB", {"ad": 1, "abd": 1}, {}),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-nodes")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    handles = {}
    for name, (spec, resources, extra) in NODES.items():
        env = {
            "MIGPOOL_SIMULATE": spec,
            "MIGPOOL_STATE_DIR": str(root / name),
            "PYTHONPATH": f"{TESTS}:{SRC}",
            "MIGPOOL_CONFIG_DIR": str(root / "config"),
            **extra,
        }
        handles[name] = c.add_node(num_cpus=2, resources=resources, env_vars=env)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR")
    yield c, handles, root
    ray.shutdown()
    c.shutdown()


def sim(root, name, monkeypatch):
    """The simulated machine of a node, read from the driver (its state file under the node's state dir)."""
    monkeypatch.setenv("MIGPOOL_STATE_DIR", str(root / name))
    return SimulatedBackend(NODES[name][0])


def test_mixed_gpus_on_two_nodes_one_actor_per_partition(cluster, monkeypatch):
    c, handles, root = cluster
    with Compute(
        provider=migpool.Ray(node_resource="ab"),
        nodes=2,
        worker=Worker(executor="process"),
        plugins=[plugins.mig(profile="3g.40gb", gpus="all", count="all")],
        progress=False,
    ) as pool:
        parts = pool.partitions
        rs = gather(*[T.where() for _ in range(24)]) >> pool
        per_node = T.where() @ pool
        fut = T.add(2, 3) > pool
        assert fut.result(timeout=60) == 5
    a100, h100 = sim(root, "a100", monkeypatch), sim(root, "h100", monkeypatch)
    assert len(parts) == 2 + 4  # 2 on the A100 node, 2 on each H100 of the other
    infos = {r["info"].global_worker_index: r for r in rs}
    assert sorted(infos) == list(range(6))
    for r in rs:
        i = r["info"]
        assert r["initial_cuda"] == r["cuda"] == i.partition.uuid  # pinned from the process's first instruction
        assert i.total_nodes == 2 and i.total_workers == 6 and i.is_head == (i.node == 0)
        assert i.total_accelerators == 6 and i.head_addr == i.peers[0]["private_ip"] and len(i.peers) == 2
        assert i.workers_per_node == (2 if i.partition.gpu_uuid in {g.uuid for g in a100.gpus()} else 4)
    assert [r["info"].node for r in per_node] == [0, 1]  # broadcast: once per node, in node order
    assert a100.gpus()[0].mig_current and h100.gpus()[1].mig_current  # partitions are kept (restore not asked)
    reconcile.teardown(a100, restore=True)
    reconcile.teardown(h100, restore=True)


def test_routing_mixed_layouts_and_restore(cluster, monkeypatch):
    c, handles, root = cluster
    with Compute(
        provider=migpool.Ray(node_resource="abd"),
        nodes="all",
        worker=Worker(executor="process"),
        plugins=[plugins.mig(layout={"3g.40gb": 1, "1g.10gb": 2}, gpus="all", restore=True)],
        progress=False,
    ) as pool:  # 3 nodes: A100, H100 ×2, H100
        assert len(pool.partitions) == 3 * 4
        small = gather(*[T.where().on("1g.10gb") for _ in range(24)]) >> pool
        big = gather(*[T.where().on("3g.40gb") for _ in range(12)]) >> pool
    assert {r["info"].partition.profile for r in small} == {"1g.10gb"}
    assert {r["info"].partition.profile for r in big} == {"3g.40gb"}
    assert {r["info"].node for r in small} == {0, 1, 2} and {r["info"].total_nodes for r in big} == {3}
    for name in ("a100", "h100", "gone"):
        b = sim(root, name, monkeypatch)
        assert all(not g.mig_current for g in b.gpus()), name  # restore=True put every node back


def test_a_refusing_node_leaves_every_node_unchanged(cluster, monkeypatch):
    c, handles, root = cluster
    before = {n: sim(root, n, monkeypatch).operations() for n in ("a100", "h100", "gone")}
    with pytest.raises(migpool.ReadOnlyError) as e:
        with Compute(
            provider=migpool.Ray(node_resource=None),
            nodes="all",
            worker=Worker(executor="process"),
            plugins=[plugins.mig(profile="7g.80gb", gpus="all", count="all")],
            progress=False,
        ):
            pass
    ro = handles["ro"]
    assert f"Ray node {ro.node_id[:8]}" in str(e.value) and "refused: MIGPOOL_READ_ONLY is set" in str(e.value)
    assert str(e.value).endswith("nothing was changed on any node")
    assert {n: sim(root, n, monkeypatch).operations() for n in before} == before


def test_actor_crash_fails_its_task_and_restarts(cluster):
    with Compute(
        provider=migpool.Ray(node_resource="ab"),
        nodes=2,
        worker=Worker(executor="process"),
        plugins=[plugins.mig(profile="7g.80gb", gpus="all", count="all")],
        progress=False,
    ) as pool:
        with pytest.raises(migpool.WorkerLostError, match=r"on node \d \(.*\) \(partition MIG-.*7g.80gb.*\) died"):
            T.crash(3) >> pool
        with pytest.raises(T.Boom, match="still fine"):
            T.fail("still fine") >> pool
        assert sum(gather(*[T.add(i) for i in range(30)]) >> pool) == sum(range(30))
        with pytest.raises(migpool.TaskTimeoutError):
            T.nap(30).with_options(timeout=1) >> pool
        assert T.add(1) >> pool == 1
        actors = [w.actor for w in pool._sched.workers]
    for a in actors:  # closed: no actor left behind
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(a.ready.remote(), timeout=30)


def test_partition_options_for_ray_native_actors(cluster, monkeypatch):
    c, handles, root = cluster
    b = sim(root, "h100", monkeypatch)
    reconcile.apply({"1g.10gb": 2}, b, gpus=[0])
    monkeypatch.delenv("MIGPOOL_STATE_DIR")

    @ray.remote
    class Mine:
        def cuda(self):
            return os.environ.get("CUDA_VISIBLE_DEVICES")

    opts = migpool.ray.partition_options("1g.10gb")
    opts2 = migpool.ray.partition_options("1g.10gb")
    uuids = {d.uuid for d in b.mig_devices(0)}
    got = {ray.get(Mine.options(**o).remote().cuda.remote()) for o in (opts, opts2)}
    assert got == uuids  # two actors, two different partitions, each pinned to its own
    with pytest.raises(migpool.PluginError, match="no free 1g.10gb partition"):
        migpool.ray.partition_options("1g.10gb")
    reconcile.teardown(b, restore=True)


def test_put_and_streams_on_a_ray_pool(cluster):
    np = pytest.importorskip("numpy")
    with Compute(
        provider=migpool.Ray(node_resource="ab"),
        nodes=2,
        worker=Worker(executor="process", concurrency=1),
        progress=False,
    ) as pool:
        a = np.arange(1 << 18, dtype=np.float64)  # 2 MiB: through Ray's object store, not the batches
        ref = pool.put(a)
        sums = [pool.submit(T.describe, {"x": [ref]}).result()["x"][0]["sum"] for _ in range(4)]
        assert sums == [float(a.sum())] * 4
        got = [pool.submit(T.stored_ids, ref, [ref]).result() for _ in range(6)]
        assert all(ids[0] == ids[1] and held == 1 for ids, held, _ in got)
        big = pool.submit(T.make_array, 1 << 18, 2.0).result()
        assert float(big.sum()) == 2.0 * (1 << 18)
        gen = migpool.function(T.count_up)
        assert list(gen(40) >> pool) == list(range(40))
        assert pool.submit(T.running_sum, iter(range(500))).result() == sum(range(500))
        assert pool.submit(T.running_sum, (x for x in range(100))).result() == sum(range(100))
        assert list(pool.submit(T.squares_of, iter(range(30))).result()) == [x * x for x in range(30)]
        items = []
        with pytest.raises(T.Boom, match="failed at 2"):
            for x in pool.submit(T.fail_at, 10, 2).result():
                items.append(x)
        assert items == [0, 1]
        for x in pool.submit(T.count_up, 10**9).result():
            if x == 5:
                break
        assert [pool.submit(T.add, i, 1).result(timeout=60) for i in range(4)] == [1, 2, 3, 4]  # both freed


def test_pool_collections_across_ray_nodes(cluster):
    with Compute(
        provider=migpool.Ray(node_resource="ab"),
        nodes=2,
        worker=Worker(executor="process", concurrency=1),
        progress=False,
    ) as pool:
        got = T.shared_round(2, "k") @ pool  # one task per node, both in the barrier at once
        assert sorted(n for n, _ in got) == [0, 1] and sorted(a for _, a in got) == [0, 1]
        assert pool.counter("rounds").value == 2 and pool.dict("totals")["k"] == 2
        assert sorted(pool.queue("done").get(timeout=30) for _ in range(2)) == [0, 1]
        assert pool.queue("done").get(timeout=0.2) is None
        with pool.lock("totals"):  # the driver holds it: a task waits, then times out
            with pytest.raises(TimeoutError):
                pool.submit(lambda: migpool.lock("totals", timeout=0.5).acquire()).result(timeout=60)
        served = [n for n in ray.util.list_named_actors() if n.startswith("migpool-shared-")]
    assert len(served) == 1  # one named actor served the pool's collections ...
    assert served[0] not in ray.util.list_named_actors()  # ... and went with the pool


def test_a_node_leaving_mid_run_fails_or_retries_its_tasks(cluster, monkeypatch):
    c, handles, root = cluster
    with Compute(
        provider=migpool.Ray(node_resource="ad"),
        nodes=2,
        worker=Worker(executor="process"),
        plugins=[plugins.mig(profile="7g.80gb")],
        progress=False,
        retries=1,
    ) as pool:
        futs = [pool.submit(T.nap(1.0, i)) for i in range(8)]
        time.sleep(0.5)
        c.remove_node(handles.pop("gone"))
        results = [f.result(timeout=120) for f in futs]
        assert results == list(range(8))  # the lost ones were retried on the node that stayed
        assert T.add(7) >> pool == 7
        lost = [w for w in pool._sched.workers if w.dead_reason]
        assert lost and all("left the Ray cluster" in w.dead_reason for w in lost)


def test_the_reference_example_runs_unchanged_on_a_local_two_node_cluster(tmp_path):
    """examples/ray_mig.py --local-cluster: the issue's example as written (Image(pip=["torch"]) included)."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MIGPOOL_SIMULATE", "RAY_ADDRESS")}
    env["PYTHONPATH"] = SRC
    r = subprocess.run(
        [sys.executable, str(Path(TESTS).parent / "examples" / "ray_mig.py"), "--local-cluster"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    workers = [line for line in lines if line.startswith("node ") and " worker " in line]
    assert len(workers) == 4 and {w.split()[1] for w in workers} == {"0", "1"}
    assert all("3g.40gb MIG-" in w for w in workers)
    assert [line.split(" (")[0] for line in lines if "partitions, head=" in line] == ["node 0", "node 1"]


def test_dynamic_mig_across_nodes_makes_partitions_where_there_is_room(cluster, monkeypatch):
    """Dynamic MIG on Ray: one controller sees every node's GPUs; each node's partitions are made there, each
    with an actor pinned to it; an idle partition on any node is used before a new one is made."""
    _, _, root = cluster
    for name in ("a100", "h100"):  # earlier tests keep their partitions (restore not asked): start from bare GPUs
        reconcile.teardown(sim(root, name, monkeypatch), restore=True)
    monkeypatch.delenv("MIGPOOL_STATE_DIR")
    with Compute(
        provider=migpool.Ray(node_resource="ab"),
        nodes=2,
        worker=Worker(executor="process"),
        plugins=[plugins.mig(dynamic=True, gpus="all", keep_idle=30.0, restore=True)],
        progress=False,
    ) as pool:
        assert pool.partitions == []
        wave = [T.where(0.5).on("1g.10gb") for _ in range(10)] + [T.where(0.3).on("3g.40gb") for _ in range(3)]
        rs = gather(*wave) >> pool
        made = len([ch for ch in pool.changes if ch["action"] == "create"])
        again = gather(*[T.where().on("1g.10gb") for _ in range(3)]) >> pool  # idle ones exist: nothing new
        assert len([ch for ch in pool.changes if ch["action"] == "create"]) == made
        big = T.where().on("7g.80gb") >> pool
        live = pool.partitions
        changes = pool.changes
    for r, t in zip(rs + again, wave + [None] * 3, strict=False):
        i = r["info"]
        assert r["initial_cuda"] == r["cuda"] == i.partition.uuid  # the actor was pinned from its first instruction
        assert i.partition.profile == (t.partition if t else "1g.10gb")
    # the first partitions go where the most room is, every GPU (which tasks they run depends on which actors start
    # first: on a loaded machine one node's may all be done before the other's actors are up)
    assert {r["info"].node for r in rs} <= {0, 1}
    assert big["info"].partition.profile == "7g.80gb"
    assert {p.node for p in live} <= {0, 1} and all(ch["reason"] for ch in changes)
    assert {ch["node"] for ch in changes if ch["action"] == "create"} == {0, 1}
    for name in ("a100", "h100"):
        b = sim(root, name, monkeypatch)
        assert all(not g.mig_current for g in b.gpus()), name  # restore=True: every node as before


def test_a_draining_ray_actor_takes_no_task(cluster):
    """Dynamic MIG drains a partition it is about to free (`draining`, set under the scheduler's lock): its Ray
    actor must take no new task, through the same capacity gate as a local worker; undrained, it takes tasks
    again."""
    with Compute(
        provider=migpool.Ray(node_resource="ro"), worker=Worker(concurrency=2, executor="process"), progress=False
    ) as pool:
        sched = pool.scheduler
        drained, other = sched.workers
        with sched.lock:
            drained.draining = True  # (what dynamic MIG's policy does to a partition it frees)
        rs = gather(*[T.where() for _ in range(12)]) >> pool
        assert {r["pid"] for r in rs} == {other.stats.pid}
        assert drained.stats.tasks_started == 0 and other.stats.tasks_started == 12
        with sched.lock:
            drained.draining = False
        gather(*[T.where(0.05) for _ in range(12)]) >> pool
        assert drained.stats.tasks_started > 0
