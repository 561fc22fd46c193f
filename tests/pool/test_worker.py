"""migpool.pool.worker: tasks that fork or leave processes; regressions that once broke migpool (issue 22)."""

from __future__ import annotations

from migpool import Compute, Worker


def _fork_and_return(x):
    import os

    os.fork()  # the child returns from the task as well
    return x


def _leave_a_child(seconds):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", f"import os, time; os.setsid(); time.sleep({seconds})"])
    return p.pid


def test_a_task_whose_forked_child_also_returns_gives_every_task_its_own_result(monkeypatch):
    """Before: the child's frame went to the next task, then the reader thread died and the program hung."""
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as pool:
        assert [pool.submit(_fork_and_return, i).result(timeout=30) for i in range(5)] == list(range(5))
        assert pool.submit(lambda: "still fine").result(timeout=30) == "still fine"


def test_processes_a_task_leaves_behind_end_with_the_pool():
    """A task that starts a process in its own session and returns: the process ends when the pool closes (it
    was left running with parent PID 1)."""
    from migpool.host.proc import pid_alive, wait_gone

    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as pool:
        pid = pool.submit(_leave_a_child, 600).result(timeout=30)
        assert pid_alive(pid)
    assert wait_gone([pid], 10) == []
