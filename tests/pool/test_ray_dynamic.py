"""Dynamic MIG on a Ray pool drains and reserves as the local pool does (issue 43): a local Ray cluster of two
simulated A100-80GB nodes; small tasks keep arriving while one task needs a whole GPU."""

import concurrent.futures as cf
import logging
import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray_clusters import simulated_nodes  # noqa: E402

import migpool  # noqa: E402
from migpool import Compute, SimulatedBackend, Worker, plugins  # noqa: E402

HERE = str(Path(__file__).parent)  # this module, where the nodes' workers import its tasks from
SMALL_S = 0.5  # a small task's run time
IN_FLIGHT = 4  # small tasks kept submitted: each GPU runs some, so the whole-GPU task finds none free
BIG_WITHIN_S = 25.0  # the most the whole-GPU task may wait to start (it starts in about 2-6 s on 2 loaded cores)


def _record(records: str, kind: str, n: int, start: float) -> dict:
    """What ran where and when, written once per run (a file per run, so a task run twice leaves two); whether
    the task's partition still existed on its node's simulated GPU when it ended."""
    info = migpool.instance_info()
    p = info.partition
    alive = p.uuid in {d.uuid for d in SimulatedBackend(os.environ["MIGPOOL_SIMULATE"]).mig_devices(p.gpu_index)}
    rec = dict(
        kind=kind, n=n, uuid=p.uuid, profile=p.profile, node=info.node, gpu=p.gpu_index, start=start, end=time.time()
    )
    rec["alive"] = alive
    Path(records, f"{kind}-{n}-{os.getpid()}-{time.time_ns()}").write_text(repr(rec))
    return rec


@migpool.function(partition="2g.20gb")
def small(records: str, n: int) -> dict:
    start = time.time()
    time.sleep(SMALL_S)
    return _record(records, "small", n, start)


@migpool.function(min_memory="50GB")  # held only by a 7g.80gb: a whole A100-80GB
def big(records: str) -> dict:
    start = time.time()
    time.sleep(0.3)
    return _record(records, "big", 0, start)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-dynamic")
    with simulated_nodes(root, ("n0", "n1"), "dyn", path=[HERE]):  # (the first node is the head: a raylet fewer)
        yield root


class _OnReserve(logging.Handler):
    """Called on the controller's thread as it notes a reservation (after draining, before its next step): what
    each partition of the reserved GPU had started by then (its own stats), and whether it drains."""

    def __init__(self, pool: Compute) -> None:
        super().__init__(logging.INFO)
        self.pool = pool
        self.reservations: list[dict] = []
        self.seen: list[tuple] = []  # (slot, tasks started then, draining then) on the GPU reserved first

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("reserve "):
            return
        entry = [ch for ch in self.pool.changes if ch["action"] == "reserve"][-1]
        self.reservations.append(entry)
        if len(self.reservations) > 1:
            return
        sched = self.pool.scheduler
        with sched.lock:
            for w in sched.workers:
                p = w.spec.partition
                if p is not None and (p.node, p.gpu_index) == (entry["node"], entry["gpu"]):
                    self.seen.append((w, w.stats.tasks_started, w.draining))


def dynamic_pool() -> Compute:
    """A pool of both nodes' GPUs under dynamic MIG: each task on a partition made for it."""
    return Compute(
        provider=migpool.Ray(node_resource="dyn"),
        nodes=2,
        worker=Worker(executor="process"),
        plugins=[plugins.mig(dynamic=True, gpus="all", keep_idle=30.0, restore=True, remember=False)],
        progress=False,
    )


def test_a_whole_gpu_task_is_not_starved_on_a_ray_pool_and_its_gpu_is_drained(cluster, tmp_path):
    records = str(tmp_path / "runs")
    os.mkdir(records)
    log = logging.getLogger("migpool.dynamic")
    level = log.level
    with dynamic_pool() as pool:
        watch = _OnReserve(pool)
        log.addHandler(watch)
        log.setLevel(logging.INFO)
        try:
            n = 0
            futs: dict[int, cf.Future] = {}
            sent: dict[int, float] = {}  # when each small task was submitted

            def more() -> cf.Future:
                nonlocal n
                n += 1
                sent[n] = time.time()
                futs[n] = pool.submit(small(records, n))
                return futs[n]

            inflight = {more() for _ in range(IN_FLIGHT)}
            began = time.time()
            while sum(w["running"] for w in pool.stats()["workers"]) < IN_FLIGHT:  # one partition each, running
                assert time.time() - began < 60, f"{IN_FLIGHT} small tasks never ran at once: {pool.stats()}"
                time.sleep(0.02)
            t_big = time.time()
            whole = pool.submit(big(records))
            after_big = n  # small tasks submitted from here on arrive while the whole-GPU task waits
            while not whole.done() or n < after_big + IN_FLIGHT:  # keep them coming until it ran, and beyond
                assert time.time() - t_big < BIG_WITHIN_S + 30, "the whole-GPU task never ended"
                done, inflight = cf.wait(inflight, timeout=0.05, return_when=cf.FIRST_COMPLETED)
                inflight |= {more() for _ in done}
            results = {k: f.result(timeout=60) for k, f in futs.items()}
            got = whole.result()
            changes = pool.changes
            stats = pool.stats()
        finally:
            log.removeHandler(watch)
            log.setLevel(level)

    # not starved: it started within the bound while small tasks kept arriving, and before they all ran
    assert got["profile"] == "7g.80gb" and got["alive"]
    assert got["start"] - t_big < BIG_WITHIN_S, f"the whole-GPU task waited {got['start'] - t_big:.1f} s"
    later = [r for k, r in results.items() if k > after_big]
    assert any(t_big < sent[k] < got["start"] for k in results if k > after_big)  # they did keep arriving
    # its GPU was reserved for it, and the partitions there drained: none took a task after the reservation
    assert watch.reservations, f"no reservation was made: {changes}"
    reserved = watch.reservations[0]
    assert reserved["profile"] == "7g.80gb" and (reserved["node"], reserved["gpu"]) == (got["node"], got["gpu"])
    assert watch.seen and all(draining for _, _, draining in watch.seen)
    assert [w.stats.tasks_started for w, _, _ in watch.seen] == [started for _, started, _ in watch.seen]
    drained = {w.spec.partition.uuid for w, _, _ in watch.seen}
    on_it = [r for r in results.values() if r["uuid"] in drained]
    assert on_it and all(r["start"] < got["start"] for r in on_it)
    for uuid in drained:  # one task at a time: at most the one sent before the drain may start after it
        assert sum(r["start"] > reserved["time"] for r in on_it if r["uuid"] == uuid) <= 1
    made_there = [
        ch
        for ch in changes
        if ch["action"] == "create"
        and (ch["node"], ch["gpu"]) == (got["node"], got["gpu"])
        and reserved["time"] <= ch["time"] <= got["start"]
    ]
    assert [ch["profile"] for ch in made_there] == ["7g.80gb"]  # nothing else made there while it was held
    # meanwhile the other node's GPU ran the small tasks that kept arriving
    assert any(r["start"] > reserved["time"] and (r["node"], r["gpu"]) != (got["node"], got["gpu"]) for r in later)
    # every task ended exactly once, on a partition that existed until its end, and no task was lost
    runs = sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in Path(records).iterdir())
    assert runs == sorted([f"small-{k}" for k in futs] + ["big-0"])
    assert [results[k]["n"] for k in sorted(results)] == sorted(futs)
    assert all(r["alive"] for r in results.values())
    assert all(w["tasks_lost"] == 0 and w["tasks_failed"] == 0 for w in stats["workers"])
    assert all(w.stats.tasks_lost == 0 and w.stats.tasks_failed == 0 for w, _, _ in watch.seen)  # (destroyed ones)
    assert stats["placement_blocked"] == 0


STEPS, STEP_S = 30, 0.3  # a checkpoint task: 9 s if it ran to its end


@migpool.function(checkpoint=True, partition="3g.40gb")  # (a named size: rule 7 never moves it, only rule 4)
def stepper(n: int, resume=None):
    """A checkpoint task of `n` steps; returns each step's (pid, node, GPU, when it ended)."""
    ran = list(resume or [])
    while len(ran) < n:
        time.sleep(STEP_S)
        info = migpool.instance_info()
        ran.append((os.getpid(), info.node, info.partition.gpu_index, time.time()))
        yield migpool.Checkpoint(ran, done=len(ran), total=n)
    return ran


def test_a_reservation_stops_a_checkpoint_task_in_its_way_on_a_ray_pool(cluster, tmp_path):
    """As locally, a checkpoint task in a reservation's way stops at its next checkpoint and resumes elsewhere from
    it, rather than run to its end while the whole-GPU task waits (a Ray actor takes the pause between its
    checkpoints, and the driver follows them)."""
    records = str(tmp_path / "runs")
    os.mkdir(records)
    with dynamic_pool() as pool:
        steps = [pool.submit(stepper(STEPS)) for _ in range(2)]  # one on each GPU: the most room
        began = time.time()
        while sum(w["running"] for w in pool.stats()["workers"]) < 2:
            assert time.time() - began < 60, f"the checkpoint tasks never ran at once: {pool.stats()}"
            time.sleep(0.02)
        got = big(records) >> pool
        runs = [f.result(timeout=120) for f in steps]
        changes = pool.changes
        stats = pool.stats()
    reserved = [ch for ch in changes if ch["action"] == "reserve"]
    assert reserved and reserved[0]["profile"] == "7g.80gb", changes
    assert (reserved[0]["node"], reserved[0]["gpu"]) == (got["node"], got["gpu"])
    for ran in runs:  # every step once, in order, whatever moved
        assert len(ran) == STEPS and [r[3] for r in ran] == sorted(r[3] for r in ran)
    stopped = [ran for ran in runs if len({r[0] for r in ran}) > 1]
    assert len(stopped) == 1, runs  # the task in the way stopped and resumed in another actor; the other did not
    first = [r for r in stopped[0] if r[0] == stopped[0][0][0]]
    assert {(r[1], r[2]) for r in first} == {(got["node"], got["gpu"])}  # it ran on the reserved GPU until it stopped
    assert first[-1][3] < got["start"] and len(first) < STEPS  # stopped before its end, and before the big task ran
    assert got["start"] < stopped[0][-1][3]  # the big task did not wait for the checkpoint task's end
    assert all(w["tasks_lost"] == 0 and w["tasks_failed"] == 0 for w in stats["workers"])
