"""host/locks.py and the simulator's state lock: every wait is bounded and names its holder (issue 41, failures 9
and 16); regressions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import migpool
from migpool.backend.simulated import SimulatedBackend
from migpool.errors import LockTimeoutError
from migpool.host.locks import LockTimeout, PathLock, holders, process_state, waits_bounded
from migpool.reconcile.core import actual_instances, gpu_lock_path

HOLD = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
)


@contextlib.contextmanager
def stopped_holder(path: Path) -> Iterator[int]:
    """Another process that takes the flock on `path`, then is stopped with SIGSTOP; ended after the block."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "held\n"
        os.kill(p.pid, signal.SIGSTOP)
        yield p.pid
    finally:
        p.kill()
        p.wait(timeout=10)


def test_a_timeout_names_the_holders_pid_and_that_it_is_stopped(tmp_path):
    path = tmp_path / "x.lock"
    with stopped_holder(path) as pid:
        assert [(h.pid, h.stopped) for h in holders(path)] == [(pid, True)]
        start = time.monotonic()
        with pytest.raises(LockTimeout) as e:
            PathLock(path).acquire(timeout=0.2)
        assert time.monotonic() - start < 2
        assert f"PID {pid}" in str(e.value) and "stopped" in str(e.value) and f"kill -CONT {pid}" in str(e.value)
    assert holders(path) == []


def test_a_wait_with_no_time_given_is_bounded_by_waits_bounded(tmp_path):
    path = tmp_path / "x.lock"
    with stopped_holder(path) as pid, waits_bounded(0.3):
        start = time.monotonic()
        with pytest.raises(LockTimeout) as e:
            PathLock(path).acquire()
        assert time.monotonic() - start < 2 and e.value.holder is not None and e.value.holder.pid == pid


def test_an_apply_refused_by_a_stopped_holder_of_the_gpu_lock_names_it(sim):
    b = sim()
    with stopped_holder(gpu_lock_path(b, b.gpu(0))) as pid:
        with pytest.raises(LockTimeoutError) as e:
            migpool.apply({"3g.40gb": 2}, b, lock_timeout=0.3)
    assert "GPU 0" in str(e.value) and f"PID {pid}" in str(e.value) and "stopped" in str(e.value)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "COLUMNS": "200", "MIGPOOL_SIMULATE": "A100-80GB", **env}
    return subprocess.run([sys.executable, "-m", "migpool", *args], capture_output=True, text=True, env=e, timeout=30)


def test_an_apply_stopped_inside_an_operation_hangs_neither_another_apply_nor_status(sim):
    b: SimulatedBackend = sim()
    lock = Path(str(b.path) + ".lock")
    env = {**os.environ, "MIGPOOL_SIMULATE": "A100-80GB", "MIGPOOL_SIM_LATENCY": "create_gpu_instance=5"}
    first = subprocess.Popen([sys.executable, "-m", "migpool", "apply", "3g.40gb:2"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (b.path.exists() and [h.pid for h in holders(lock)] == [first.pid]):  # inside create-gi, most likely
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)
        for r in (cli("apply", "1g.10gb:7", "--lock-timeout", "1"), cli("status", MIGPOOL_SIM_LOCK_TIMEOUT="1")):
            assert r.returncode == 2, r.stdout + r.stderr
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
            assert f"PID {first.pid}" in lines[0] and "stopped" in lines[0], lines[0]
    finally:
        first.kill()
        first.wait(timeout=10)
    migpool.apply({"3g.40gb": 2}, b)  # the killed holder's locks are gone with it; its run converges
    assert sorted(str(a.instance) for a in actual_instances(b, 0)) == ["3g.40gb@0:4", "3g.40gb@4:4"]


LEASE = (
    "import sys, time; from pathlib import Path; from migpool.host.leases import Leases; "
    "Leases(Path(sys.argv[1]), 'holder-a').take(sys.argv[2]); print('held', flush=True); time.sleep(60)"
)


def test_a_lease_refusal_names_a_stopped_holder_and_how_to_let_it_go_on(tmp_path):
    """Failure 16: a lease's refusal named the holder's PID and command, not that it was stopped."""
    from migpool.errors import LeasedError
    from migpool.host.leases import Leases

    uuid = "MIG-00000000-0000-0000-0000-000000000001"
    p = subprocess.Popen([sys.executable, "-c", LEASE, str(tmp_path), uuid], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "held\n"
        with pytest.raises(LeasedError) as running:
            Leases(tmp_path, "holder-b").take(uuid)
        assert f"PID {p.pid}" in str(running.value) and "stopped" not in str(running.value)
        os.kill(p.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10  # (a signal is delivered when the kernel next schedules its target)
        while (process_state(p.pid) or ("", ""))[1] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(LeasedError) as stopped:
            Leases(tmp_path, "holder-b").take(uuid)
        assert f"PID {p.pid}" in str(stopped.value) and f"stopped (kill -CONT {p.pid}" in str(stopped.value)
    finally:
        p.kill()
        p.wait(timeout=10)
