"""host/containment.py: a container ends whole (a double-forked daemon in its own session too), by the parent or,
when the parent is killed with SIGKILL, by its leader; on every kind this machine offers."""

import os
import signal
import subprocess
import sys
import time

import pytest

from migpool.host import containment

# A leader: joins its container, starts a daemon that leaves its session and parent (a double fork and setsid),
# prints both PIDs and waits.
LEADER = """
import os, sys, time
from migpool.host import containment
c = containment.enter()
if len(sys.argv) > 1:
    containment.arm_parent_death(c, int(sys.argv[1]))
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        time.sleep(300)
    os._exit(0)
daemon = os.read(r, 32).decode()
print(os.getpid(), daemon, flush=True)
time.sleep(300)
"""

# A parent that makes a container, starts a leader in it that watches for its death, and waits to be killed.
PARENT = """
import os, subprocess, sys, time
from migpool.host import containment
c = containment.Container.make("t", sys.argv[1])
p = subprocess.Popen([sys.executable, "-c", sys.argv[2], str(os.getpid())], env={**os.environ, **c.env()},
                     stdout=subprocess.PIPE, text=True)
c.add(p.pid)
print(p.stdout.readline().strip(), flush=True)
time.sleep(300)
"""

KINDS = ["sweep"] + (["cgroup"] if containment.kind() == "cgroup" else [])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _gone(pids, within=5.0) -> bool:
    end = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.02)
    return not any(_alive(p) for p in pids)


@pytest.mark.parametrize("want", KINDS)
def test_ending_a_container_ends_a_daemon_that_left_its_session(want):
    c = containment.Container.make("t", want)
    p = subprocess.Popen(
        [sys.executable, "-c", LEADER], env={**os.environ, **c.env()}, stdout=subprocess.PIPE, text=True
    )
    c.add(p.pid)
    leader, daemon = (int(x) for x in p.stdout.readline().split())
    assert _alive(daemon) and os.getsid(daemon) != os.getsid(leader)
    assert {leader, daemon} <= set(c.pids())
    assert c.end()
    p.wait(5)
    assert _gone([leader, daemon])
    assert c.cgroup is None or not c.cgroup.exists()


@pytest.mark.parametrize("want", KINDS)
def test_a_parent_killed_with_sigkill_leaves_nothing_behind(want):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, want, LEADER], stdout=subprocess.PIPE, text=True)
    leader, daemon = (int(x) for x in parent.stdout.readline().split())
    assert _alive(leader) and _alive(daemon)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(5)
    assert _gone([leader, daemon]), "the leader was told of its parent's death and ended its container"


def test_the_kind_is_said_and_cgroups_can_be_turned_off(monkeypatch):
    assert containment.kind() in ("cgroup", "sweep")
    monkeypatch.setenv(containment.CGROUP_ENV, "0")
    assert containment.Container.make("t", None if containment.kind() == "sweep" else "sweep").kind == "sweep"
