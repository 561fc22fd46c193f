"""migpool.pool.scheduler: workers that die or cannot restart; regressions that once broke migpool (issue 22)."""

from __future__ import annotations

import pytest

import migpool
from migpool import Compute, Worker


def _leave_a_grandchild_and_die(seconds):
    import os
    import subprocess
    import sys

    channel = tuple(int(fd) for end in sys.argv[1:3] for fd in end.split(":"))  # the worker's channel to the pool
    subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"], pass_fds=channel)
    os._exit(7)


def test_a_workers_death_is_seen_though_a_process_it_left_holds_its_pipe():
    """The worker dies, but a process it started holds a copy of its pipe: the death is seen from the process
    itself, at once (before: only when the pipe closed, 46 s later or never)."""
    import time

    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as pool:
        t0 = time.monotonic()
        with pytest.raises(migpool.WorkerLostError, match="exited with code 7"):
            pool.submit(_leave_a_grandchild_and_die, 60).result(timeout=30)
        assert time.monotonic() - t0 < 10
        assert pool.submit(lambda: 5).result(timeout=30) == 5


def test_a_slot_that_cannot_restart_its_worker_fails_its_tasks_and_the_pool_closes(tmp_path):
    """Workers killed as they start: before, after three failed starts new tasks and close() waited forever."""
    import os
    import signal
    import time

    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\necho 'cannot start: no such module' >&2\nexit 3\n")
    failing.chmod(0o755)
    pool = Compute(worker=Worker(concurrency=2, executor="process"), progress=False)
    with pool:
        sched = pool.scheduler
        doomed = sched.workers[0]
        doomed.spec.python = str(failing)  # every restart of this slot fails
        os.kill(doomed.stats.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not doomed.dead_reason and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "could not start" in doomed.dead_reason and "no such module" in doomed.dead_reason
        assert [pool.submit(lambda i=i: i).result(timeout=30) for i in range(4)] == [0, 1, 2, 3]  # the other slot
        doomed.spec.python = str(failing)
        os.kill(sched.workers[1].stats.pid, signal.SIGKILL)
        sched.workers[1].spec.python = str(failing)
        deadline = time.monotonic() + 30
        while not sched.workers[1].dead_reason and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(migpool.WorkerStartError, match="no such module"):
            pool.submit(lambda: 1).result(timeout=10)
    t0 = time.monotonic()
    pool.close()
    assert time.monotonic() - t0 < 10


def test_messages_say_what_happened():
    """Cancelled futures say why, a closed pool says it is closed, a signal reads as English."""
    import concurrent.futures
    import time

    pool = Compute(worker=Worker(concurrency=1, executor="process"), progress=False)
    with pool:
        with pytest.raises(migpool.WorkerLostError, match="it was killed by signal 9"):
            pool.submit(lambda: __import__("os").kill(__import__("os").getpid(), 9)).result(timeout=30)
        slow = pool.submit(time.sleep, 5)
        waiting = [pool.submit(time.sleep, 5) for _ in range(40)]
        pool.close(error=True)
    for f in [slow, *waiting]:
        with pytest.raises(concurrent.futures.CancelledError, match="the pool closed before this task (ran|ended)"):
            f.result(timeout=10)
    with pytest.raises(RuntimeError, match="this Compute is closed"):
        pool.submit(lambda: 1)
