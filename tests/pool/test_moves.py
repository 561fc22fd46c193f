"""Checkpoint tasks (`@function(checkpoint=True)`) and dynamic MIG's moves (policy rule 7), on the simulator:
a task stops at a checkpoint and resumes from it on another partition, losing and repeating no step; a move
whose new partition cannot be made resumes it all the same; a task without checkpoints is never moved."""

import time

import pool_tasks as T
import pytest

import migpool
from migpool import Checkpoint, Compute, Worker, gather, plugins


def dyn():
    return Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        worker=Worker(executor="process"),
        plugins=[plugins.mig(dynamic=True, keep_idle=30.0, remember=False)],
        progress=False,
    )


def _running(c, future, checkpoints=5, timeout=60.0):
    """Wait until the pool's only running task has reported `checkpoints` checkpoints."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with c.scheduler.lock:
            jobs = [w.outstanding[0] for w in c.scheduler.workers if w.outstanding]
        if jobs and jobs[0].progress and (jobs[0].progress[0] or 0) >= checkpoints:
            return jobs[0]
        assert not future.done(), future.exception()
        time.sleep(0.02)
    raise AssertionError("the checkpoint task reported no checkpoints")


def _check_steps(ran, n):
    """Every step ran once, in order: the count is exact and the partitions form runs (no step repeated)."""
    assert len(ran) == n
    places = [ran[0]] + [b for a, b in zip(ran, ran[1:], strict=False) if a != b]
    assert len(set(places)) == len(places)  # each (profile, process) is one run of consecutive steps
    return [p for p, _ in places]


def test_a_checkpoint_task_is_shrunk_for_waiting_tasks_and_resumes_where_it_stopped():
    n = 80
    with dyn() as c:
        long = c.submit(T.steps(n, 0.2))
        _running(c, long)  # alone on a quiet pool: the largest size
        others = gather(*[T.scaling(0.3) for _ in range(3)]) >> c
        ran = long.result(timeout=120)
        changes = c.changes
    places = _check_steps(ran, n)
    assert places[0] == "7g.80gb" and len(places) >= 2 and all(p != "7g.80gb" for p in places[1:2])
    assert len(others) == 3
    moves = [ch for ch in changes if ch["action"] == "move"]
    assert moves and moves[0]["reason"].startswith(("shrunk for a waiting task", "shrunk under load"))


def test_a_move_whose_new_partition_fails_resumes_the_task_from_its_checkpoint():
    from migpool.backend.simulated import SimulatedBackend

    n = 80
    with dyn() as c:
        site = c.controller.effects.site
        backend = site.node.backend
        assert isinstance(backend, SimulatedBackend)
        policy, failed, change = c.controller.policy, [], site.change

        def failing(gpu, create, destroy, pids=()):
            if create and not failed and any(m.state == "stopped" for m in policy.moves.active.values()):
                failed.append(create[0].profile.name)  # the moved task's new partition: the GPU refuses it
                backend.inject(fail_at=1, error="insufficient_resources")
            return change(gpu, create, destroy, pids)

        site.change = failing
        long = c.submit(T.steps(n, 0.2))
        _running(c, long)
        others = gather(*[T.scaling(0.3) for _ in range(3)]) >> c
        ran = long.result(timeout=120)
        ends = time.monotonic() + 5.0  # the controller's next step (every 0.1 s) drops a move whose task ended
        while policy.moves.active and time.monotonic() < ends:
            time.sleep(0.05)
        assert not policy.moves.active
    assert failed, "no move was made"
    _check_steps(ran, n)  # resumed elsewhere from its last checkpoint: no step lost or repeated
    assert len(others) == 3


def test_a_task_without_checkpoints_is_never_moved():
    from test_dynamic import _controller, _memory_task

    with dyn() as c:
        long = c.submit(T.scaling(4.0, cap=7))
        time.sleep(1.0)
        others = gather(*[T.scaling(0.3) for _ in range(3)]) >> c
        where = long.result(timeout=60)
        changes = c.changes
    assert where.endswith("gb") and len(others) == 3
    assert not [ch for ch in changes if ch["action"] == "move"]
    d = _controller([("7g.80gb", 0)])  # the policy itself: a task without hooks on a busy 7g is not movable
    job = _memory_task(1)
    job.progress, job.pausing, job.moves = (5.0, 100.0), False, 0
    d.slots[0].worker.outstanding = [job]
    assert d.moves.movable(d.slots[0]) is None
    job.task.checkpoint = True
    d.moves.marks[job.id] = (5.0, 0.0, "7g.80gb", id(d.slots[0].worker), 1.0)
    d.sizes.add_unit(d.costs.key(job), "7g.80gb", 0.1)
    assert d.moves.movable(d.slots[0]) is not None  # the same task with checkpoints may move


def test_a_paused_task_resumes_from_its_checkpoint_in_a_new_run():
    with Compute(provider=migpool.Local(), worker=Worker(concurrency=2, executor="process"), progress=False) as c:
        f = c.submit(T.tally(40))
        job = _running(c, f, checkpoints=3)
        with c.scheduler.lock:
            w = next(w for w in c.scheduler.workers if job in w.outstanding)
            w.pause(job)
        ran = f.result(timeout=60)
    assert len(ran) == 40 and job.moves == 1
    assert ran == sorted(ran) and set(ran) == {0, 1} and ran.count(0) >= 3  # the first run's steps, then the second's


def test_a_checkpoint_task_must_be_a_generator_that_takes_resume():
    with pytest.raises(TypeError, match="generator"):

        @migpool.function(checkpoint=True)
        def plain(resume=None):
            return 1

    with pytest.raises(TypeError, match="resume=None"):

        @migpool.function(checkpoint=True)
        def no_resume():
            yield Checkpoint(1)

    @migpool.function(checkpoint=True)
    def gen(n, resume=None):
        for i in range(resume or 0, n):
            yield Checkpoint(i + 1, done=i + 1, total=n)
        return n

    assert gen.local(3) == 3  # run here, to its end
