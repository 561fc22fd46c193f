"""Issue 42 (item 4): elastic nodes. `Nodes(initial, min, max)` with `Options(autoscale_idle_timeout=,
autoscale_cooldown=)`: a local pool reclaims idle node processes down to `min` (zero included) and starts them
again, up to `max`, when tasks come; `current_nodes()` follows. The rule itself (`decide`) is checked alone."""

import time

import pool_tasks as T
import pytest

from migpool import Compute, Nodes, Options, PluginError, gather
from migpool.pool.api.nodes import as_nodes
from migpool.pool.api.providers import Executor
from migpool.pool.scheduler.elastic import Elastic, NodeEffect, NodeLoad, decide


def wait_for(predicate, seconds=20.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_decide_grows_to_the_load_and_reclaims_idle_nodes_down_to_the_floor():
    bounds = Nodes(initial=1, min=0, max=3)
    assert decide([], 0, 2, bounds, 5.0) == (0, ())
    assert decide([], 1, 2, bounds, 5.0) == (1, ())  # a task at zero nodes starts one
    assert decide([NodeLoad(0, 2, 0.0)], 3, 2, bounds, 5.0) == (2, ())  # 5 tasks, 2 per node: 3 nodes
    assert decide([NodeLoad(0, 2, 0.0)], 30, 2, bounds, 5.0) == (2, ())  # never past max
    busy_and_idle = [NodeLoad(0, 1, 0.0), NodeLoad(1, 0, 9.0), NodeLoad(2, 0, 1.0)]
    assert decide(busy_and_idle, 0, 2, bounds, 5.0) == (0, (1,))  # only the node idle long enough goes
    assert decide([NodeLoad(0, 0, 9.0), NodeLoad(1, 0, 9.0)], 0, 1, Nodes(2, min=1, max=2), 5.0) == (0, (1,))


class FakeSched:
    """What `Elastic` reads of a scheduler: its lock, workers, queue and whether it closed."""

    def __init__(self):
        import threading

        self.lock, self.workers, self.pending, self.closed = threading.Lock(), [], [], False

    def thread_died(self, e):
        raise AssertionError(e)


class FakeSlot:
    def __init__(self, node):
        import threading
        from types import SimpleNamespace

        self.spec, self.outstanding, self.draining = SimpleNamespace(node=node), [], False
        self.stats, self.ready = SimpleNamespace(tasks_started=0), threading.Event()
        self.ready.set()


def job(node=None):
    """A waiting job as `Elastic` reads it: the node its task was sent to, if any."""
    from types import SimpleNamespace

    return SimpleNamespace(task=SimpleNamespace(node=node))


class RecordingEffect(NodeEffect):
    """An effect that only records what it is asked, and keeps the fake scheduler's workers as a pool would."""

    def __init__(self, sched, nodes):
        super().__init__(sched, {k: [] for k in range(nodes)}, lambda w: None)
        self.calls = []

    def add(self, node):
        self.calls.append(("add", node))
        self.sched.workers.append(FakeSlot(node))
        return True

    def reclaim(self, workers):
        if workers:
            self.calls.append(("reclaim", sorted(w.spec.node for w in workers)))
        for w in workers:
            self.sched.workers.remove(w)


def test_the_loop_carries_out_decisions_through_its_effect_only():
    """The loop (Elastic) and its effect are apart: a pool of any kind gives its own effect (a Ray pool's ends and
    starts the actors of a Ray node); the loop adds the free nodes the queue needs and reclaims idle ones."""
    now = [0.0]
    sched = FakeSched()
    effect = RecordingEffect(sched, 3)
    elastic = Elastic(sched, effect, Nodes(initial=0, min=0, max=3), 1, 5.0, 0.0, clock=lambda: now[0])
    sched.pending = [job(), job()]
    elastic.step()
    assert effect.calls == [("add", 0), ("add", 1)] and elastic.nodes() == 2
    sched.pending = []
    sched.workers[0].outstanding = ["busy"]
    elastic.step()  # starts the idle clocks
    now[0] = 6.0
    elastic.step()  # node 1 idle for 6 s: reclaimed; node 0 busy: kept
    assert effect.calls[2:] == [("reclaim", [1])] and elastic.node_indexes() == [0]


def idle_pool_of_two(now):
    sched = FakeSched()
    effect = RecordingEffect(sched, 2)
    elastic = Elastic(sched, effect, Nodes(initial=0, min=0, max=2), 1, 5.0, 0.0, clock=lambda: now[0])
    sched.pending = [job(), job()]
    elastic.step()
    sched.pending = []
    elastic.step()  # starts the idle clocks
    now[0] = 6.0
    return sched, effect, elastic


def test_a_node_a_waiting_task_was_sent_to_is_not_reclaimed():
    """Review: a broadcast's task for node 1, not yet taken up, lost its node to a reclaim (and then waited for a
    node that nothing would start)."""
    now = [0.0]
    sched, effect, elastic = idle_pool_of_two(now)
    sched.pending = [job(node=1)]
    elastic.step()
    assert effect.calls[2:] == [("reclaim", [0])] and elastic.node_indexes() == [1]


def test_no_node_is_reclaimed_while_a_broadcast_sends_its_tasks():
    """Review: between reading the nodes and sending each its task, a node could be reclaimed (the send then
    refused: this pool has no node k)."""
    import threading

    now = [0.0]
    sched, effect, elastic = idle_pool_of_two(now)
    with elastic.steady() as nodes:
        assert nodes == [0, 1]
        stepping = threading.Thread(target=elastic.step)
        stepping.start()
        stepping.join(0.3)
        assert stepping.is_alive() and effect.calls[2:] == []  # the step waits for the broadcast
    stepping.join(5)
    assert effect.calls[2:] == [("reclaim", [0, 1])]


def test_tasks_at_zero_nodes_fail_when_no_node_can_be_started():
    """Review: a Ray pool scaled to zero whose Ray nodes then left the cluster (an autoscaler takes idle nodes
    away) has no node to add; a task sent then waited for ever, and so did close() (it waits for the tasks)."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from migpool.errors import WorkerStartError

    class Gone(RecordingEffect):
        def free(self, running):
            return []  # (RayNodes: none of the pool's Ray nodes is alive)

    sched = FakeSched()
    effect = Gone(sched, 2)
    elastic = Elastic(sched, effect, Nodes(initial=0, min=0, max=2), 1, 5.0, 0.0, clock=lambda: 0.0)
    waiting = SimpleNamespace(task=SimpleNamespace(node=None), future=Future())
    sched.pending = [waiting]
    elastic.step()
    assert effect.calls == [] and sched.pending == []
    with pytest.raises(WorkerStartError, match="none of its nodes can be started"):
        waiting.future.result(timeout=0)


def test_nodes_and_options_as_the_reference_takes_them():
    assert as_nodes(3) == Nodes(initial=3, min=3, max=3) and not as_nodes(3).elastic
    assert as_nodes((1, 4)) == Nodes(initial=1, min=1, max=4) and as_nodes((1, 4)).elastic
    assert Nodes(desired=2).initial == 2 and Nodes(initial=1, min=0).max == 1
    with pytest.raises(PluginError, match="min and initial must not pass max"):
        Nodes(initial=3, max=2)
    with pytest.raises(PluginError, match="nodes must be a whole number"):
        as_nodes(0)
    with pytest.raises(PluginError, match="probes no node's health"):
        Options(health_command="true")
    assert Options(ssh_timeout=1, provision_timeout=600, ready_timeout=600).autoscale_idle_timeout == 120.0


def test_scale_to_zero_and_back():
    options = Options(autoscale_idle_timeout=0.3, autoscale_cooldown=0.0)
    with Compute(nodes=Nodes(initial=1, min=0, max=1), options=options, progress=False) as c:
        assert (T.add(1, 2) >> c) == 3 and c.current_nodes() == 1
        assert wait_for(lambda: c.current_nodes() == 0)  # idle: reclaimed
        assert c.worker_pids == []
        assert (T.add(2, 3) >> c) == 5  # sent at zero nodes: one starts for it
        assert c.current_nodes() == 1


def test_a_task_at_zero_nodes_does_not_wait_out_the_cooldown():
    """Review: the reclaim counted as the last change, so a task sent just after it waited the whole cooldown."""
    options = Options(autoscale_idle_timeout=0.3, autoscale_cooldown=30.0)
    with Compute(nodes=Nodes(initial=1, min=0, max=1), options=options, progress=False) as c:
        assert (T.add(1, 2) >> c) == 3
        assert wait_for(lambda: c.current_nodes() == 0)
        t0 = time.monotonic()
        assert (T.add(2, 3) >> c) == 5
        assert time.monotonic() - t0 < 20  # a node started for it, well within the 30 s cooldown


def test_grows_to_max_under_load_and_shrinks_to_min():
    options = Options(autoscale_idle_timeout=0.3)
    with Compute(
        executor=Executor(concurrency=1), nodes=Nodes(initial=1, min=1, max=3), options=options, progress=False
    ) as c:
        infos = gather(*[T.where(0.4) for _ in range(9)]) >> c
        assert {r["info"].node for r in infos} == {0, 1, 2}  # the waiting tasks started two more nodes
        assert wait_for(lambda: c.current_nodes() == 1)


def test_close_runs_what_was_sent_to_a_pool_at_zero_nodes():
    with Compute(nodes=Nodes(initial=0, min=0, max=1), progress=False) as c:
        assert c.current_nodes() == 0
        fut = c.submit(T.add, 4, 5)
    assert fut.result(timeout=0) == 9


def test_options_task_run_timeout_is_the_default_timeout():
    from migpool import TaskTimeoutError

    with Compute(options=Options(task_run_timeout=0.5), progress=False) as c:
        with pytest.raises(TaskTimeoutError, match="timeout of 0.5s"):
            T.nap(30) >> c
        assert (T.nap(0.0, "ok").with_timeout(30) >> c) == "ok"


def test_broadcast_on_an_elastic_pool_runs_on_the_nodes_there_are():
    with Compute(nodes=(2, 3), options=Options(autoscale_idle_timeout=60), progress=False) as c:
        assert [r["info"].node for r in T.where() @ c] == [0, 1]
