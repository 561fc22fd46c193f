"""Issue 42 (item 4) on Ray: elastic nodes on a Ray pool. `Nodes(initial, min, max)` with `Options(
autoscale_idle_timeout=)` ends the actors of the pool's idle Ray nodes down to `min` and starts them again, up to
`max`, when tasks wait; `current_nodes()` follows. A local Ray cluster of two nodes with simulated GPUs."""

import time

import pytest

ray = pytest.importorskip("ray")
import pool_tasks as T  # noqa: E402
from ray_clusters import simulated_nodes  # noqa: E402
from test_elastic import wait_for  # noqa: E402

import migpool  # noqa: E402
from migpool import Compute, Nodes, Options, PluginError, gather, plugins  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with simulated_nodes(tmp_path_factory.mktemp("ray-elastic"), ("one", "two"), "elastic", head_cpus=0) as c:
        yield c


def _gone(actor):
    try:
        ray.get(actor.ready.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        return True
    return False


def test_a_ray_pool_scales_its_nodes_to_min_when_idle_and_back_up_when_tasks_come(cluster):
    options = Options(autoscale_idle_timeout=0.5, autoscale_cooldown=0.0)
    seen = {}  # every actor the pool had, by its slot (one actor per slot here: none died)

    def note(pool):
        seen.update({w: w.actor for w in pool.scheduler.workers if w.actor is not None})

    with Compute(
        provider=migpool.Ray(node_resource="elastic"), nodes=Nodes(initial=1, min=0, max=2), options=options
    ) as pool:
        assert pool.current_nodes() == 1
        assert (T.add(1, 2) >> pool) == 3
        note(pool)
        first = list(seen.values())
        assert wait_for(lambda: pool.current_nodes() == 0, 60)  # idle: its node's actor ended
        assert pool.scheduler.workers == [] and all(_gone(a) for a in first)
        for _ in range(2):  # sent at zero nodes: both nodes come back for them, and go again once idle
            # (more tasks than an actor takes ahead of time: both nodes' actors get some, whichever is up first)
            futs = [pool.submit(T.where(0.5)) for _ in range(24)] + [pool.submit(T.nap(0.0, i)) for i in range(20)]
            most = 0
            while not all(f.done() for f in futs):
                most = max(most, pool.current_nodes())
                note(pool)
                time.sleep(0.05)
            got = [f.result(timeout=120) for f in futs]
            assert most == 2 and {r["info"].node for r in got[:24]} == {0, 1}
            assert {r["info"].total_nodes for r in got[:24]} == {2}
            assert got[24:] == list(range(20))  # every task ended once, with its own result
            assert wait_for(lambda: pool.current_nodes() == 0, 60)
        assert (T.add(2, 3) >> pool) == 5 and pool.current_nodes() >= 1
        note(pool)
    assert len(seen) >= 5  # the first node's actor, two rounds of two nodes' actors, the last one
    assert all(_gone(a) for a in seen.values())  # closed: no actor left behind


def test_elastic_ray_nodes_keep_their_partitions_and_refuse_dynamic_mig(cluster):
    """A reclaimed node's actors end; its partitions stay the pool's, and its new actors are pinned to them."""
    options = Options(autoscale_idle_timeout=0.5)
    with Compute(
        provider=migpool.Ray(node_resource="elastic"),
        nodes=Nodes(initial=2, min=1, max=2),
        plugins=[plugins.mig(profile="7g.80gb")],
        options=options,
    ) as pool:
        before = {r["info"].node: r["cuda"] for r in T.where() @ pool}
        assert wait_for(lambda: pool.current_nodes() == 1, 60)
        assert [r["info"].node for r in T.where() @ pool] == [0]
        nodes_seen: set[int] = set()
        deadline = time.monotonic() + 120
        while nodes_seen != {0, 1}:  # until node 1 is back and took some (a loaded machine may start it late)
            assert time.monotonic() < deadline, f"node 1 never came back: {nodes_seen}"
            for r in gather(*[T.where(0.5) for _ in range(24)]) >> pool:
                assert r["cuda"] == before[r["info"].node]  # each node, back or not, on the same partition
                nodes_seen.add(r["info"].node)
    with pytest.raises(PluginError, match=r"mig\(dynamic=True\) on a Ray pool: give it nodes=N"):
        Compute(
            provider=migpool.Ray(node_resource="elastic"),
            nodes=Nodes(initial=1, min=0, max=2),
            plugins=[plugins.mig(dynamic=True)],
        )
