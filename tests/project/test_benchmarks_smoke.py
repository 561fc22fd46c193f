"""Each benchmark runs to its end in a small form, so that a change to the pool cannot silently break one (the
figures are not checked here: benchmarks/ prints them, against baselines measured in the same run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(name: str, *args: str, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    got = subprocess.run(
        [sys.executable, str(BENCH / name), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert got.returncode == 0, f"{name} exited {got.returncode}:\n{got.stdout[-2000:]}\n{got.stderr[-3000:]}"
    return got.stdout


def test_dispatch():
    out = _run("dispatch.py", "--tasks", "300", "--latency-samples", "20", "--repeat", "1")
    assert "migpool vs ProcessPoolExecutor: throughput ×" in out


def test_payload():
    pytest.importorskip("numpy")
    out = _run("payload.py", "--sizes", "1", "--repeat", "1", "--only", "migpool,ProcessPoolExecutor")
    assert "migpool's speed-up: ProcessPoolExecutor ×" in out


def test_warm_start():
    """Issue 47's CPU benchmark in its small form: warm spares vs fresh processes, parked vs fork servers."""
    out = _run("warm_start.py", "--quick")
    assert "new partition" in out and "killed worker" in out and "mp forkserver" in out


def test_pool_collections():
    out = _run("pool_collections.py", "--ops", "50", "--rounds", "1", "--no-ray")
    assert "Manager" in out


def test_planner_and_reconfigure():
    assert "ms" in _run("planner.py")
    assert "×" in _run("reconfigure.py")


def test_ray_dispatch():
    pytest.importorskip("ray")
    out = _run("ray_dispatch.py", "--quick", timeout=600)
    assert "throughput  migpool" in out and "start-up    migpool" in out


def test_miso():
    """MISO's workload in its CI form: 12 jobs of each trace on one simulated A100-40GB, dynamic MIG in virtual
    time and in a real pool (a moved task's partition that idled away once stalled that run), and the models."""
    out = _run("miso.py", "--quick")
    assert out.count("(ar) real run") == 2 and "(b) best static" in out and "(d) MISO static" in out
    assert out.count("(f) joint replan") == 2


def test_miso_order_check():
    """--order-check: (a) and (b) with the jobs in arrival order and least work first, in its smallest form; the
    event model serves least work first: a short job that came last overtakes a long one that waits."""
    out = _run("miso.py", "--order-check", "--trace", "readme", "--gpus", "1")
    assert "in arrival order" in out and "least work first" in out
    sys.path.insert(0, str(BENCH))
    try:
        from miso import Job, dispatch
    finally:
        sys.path.remove(str(BENCH))
    trace = [Job(0, "a", 0.0, {"1g.5gb": 100.0}), Job(1, "b", 1.0, {"1g.5gb": 500.0})]
    trace.append(Job(2, "c", 2.0, {"1g.5gb": 50.0}))
    assert dispatch(["1g.5gb"], trace) == [100.0, 599.0, 648.0]
    assert dispatch(["1g.5gb"], trace, order="shortest") == [100.0, 649.0, 148.0]


def test_miso_seeds():
    """--seeds: (a), (b), (c) and (f) on the runs drawn with other seeds, in its smallest form; seed 1 is MISO's
    own draw, which the other figures use, and another seed draws other arrivals (readme: other jobs too)."""
    out = _run("miso.py", "--seeds", "1-2", "--trace", "readme", "--gpus", "1")
    assert "geo. mean" in out and "(f)/(b)" in out and "All 2: (a) at most (b) on" in out
    sys.path.insert(0, str(BENCH))
    try:
        from miso import jobs
    finally:
        sys.path.remove(str(BENCH))
    assert jobs("readme", seed=1) == jobs("readme") and jobs("readme", seed=2) != jobs("readme")
    with pytest.raises(SystemExit, match="no seed 9 in benchmarks/data/miso.json: it has seeds 1, 2"):
        jobs("readme", seed=9)


@pytest.mark.parametrize("model", ["A100-40GB", "H100-80GB"])
def test_maximal_layouts(model):
    """The best-static searches' layouts: each one placeable and maximal (no plain profile can be added), and
    every placeable set of profiles lies within one of them. The first search missed 3g.20gb beside 4g.20gb
    (its planner put the 3g.20gb where the 4g.20gb had to go) and called 1g.5gb x3 + 3g.20gb maximal."""
    sys.path.insert(0, str(BENCH))
    try:
        from layouts import maximal_layouts
    finally:
        sys.path.remove(str(BENCH))
    from migpool.errors import LayoutError
    from migpool.mig import catalog
    from migpool.mig.planner import plan

    gpu = catalog.lookup(model)
    names = [p.name for p in gpu.profiles if p.plain]

    def placeable(lay):
        try:
            plan(gpu, {n: lay.count(n) for n in set(lay)})
        except LayoutError:
            return False
        return True

    found = maximal_layouts(gpu)
    assert len(found) == len(set(found))
    for lay in found:
        assert placeable(lay) and not any(placeable((*lay, n)) for n in names), lay
    for a in names:  # every placeable pair is within some maximal layout
        for b in names:
            if placeable((a, b)):
                assert any(all(lay.count(n) >= (a, b).count(n) for n in (a, b)) for lay in found), (a, b)
    if model == "A100-40GB":
        assert ("3g.20gb", "4g.20gb") in found and ("1g.5gb", "1g.5gb", "1g.5gb", "3g.20gb") not in found
