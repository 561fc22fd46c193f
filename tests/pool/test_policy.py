"""Dynamic MIG's policy as a core fed by a view and acting through effects: it reads the pool from plain data
(view.PoolState), imports no scheduler, and what it changes goes through its effects."""

import subprocess
import sys
import types
from concurrent.futures import Future

from test_dynamic import _controller

import migpool
from migpool.mig.catalog import lookup, profiles_holding, smallest_holding
from migpool.mig.planner import PlannedInstance
from migpool.pool.dynamic.state import Making
from migpool.pool.dynamic.view import WorkerState

A100 = lookup("A100-80GB")


def _job(k, partition):
    task = types.SimpleNamespace(partition=partition, need_mib=None, node=None)
    return types.SimpleNamespace(id=k, task=task)


def test_the_policy_imports_no_scheduler():
    """The policy and its parts read the pool through the view only: importing them loads no scheduler module."""
    code = (
        "import sys, migpool.pool.dynamic.policy\n"
        "print(sorted(m for m in sys.modules if m.startswith('migpool.pool.scheduler')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_waiting_tasks_that_nothing_will_take_are_failed_through_the_effects():
    """After steps keep failing, the waiting tasks that no worker, nor partition being made, serves are failed:
    the policy reads them from the view and the effects take them out of the queue."""
    d = _controller([])
    one = _job(1, "1g.10gb")
    whole = _job(2, "7g.80gb")
    d.view.pending.extend([one, whole])
    d.view.workers.append(WorkerState(partition=types.SimpleNamespace(profile="1g.10gb", memory_mib=9856)))
    p = A100.profile("7g.80gb")
    d.making.append(Making((0, 0), PlannedInstance(p, p.placements[0]), Future(), "test", None, 0.0))
    d.fail_waiting(RuntimeError("the driver said no"))
    assert d.effects.failed == [] and d.view.pending == [one, whole]  # the 7g being made will take it
    d.making.clear()
    d.fail_waiting(RuntimeError("the driver said no"))
    assert [j for j, _ in d.effects.failed] == [whole] and d.view.pending == [one]
    error = d.effects.failed[0][1]
    assert isinstance(error, migpool.PluginError) and "the driver said no" in str(error)


def test_the_smallest_profile_holding_a_memory_need():
    """One place answers it (mig.catalog): by memory, then compute slices, +me variants left out."""
    assert smallest_holding([A100], 15 * 1024).name == "1g.20gb"  # as much memory as a 2g.20gb, one slice
    assert smallest_holding([A100], 9000).name == "1g.10gb"
    assert smallest_holding([A100], 100 * 1024) is None
    names = [p.name for p in profiles_holding(A100, 30 * 1024)]
    assert names and all(A100.profile(n).memory_mib >= 30 * 1024 and "+me" not in n for n in names)
    assert "3g.40gb" in names and "2g.20gb" not in names
