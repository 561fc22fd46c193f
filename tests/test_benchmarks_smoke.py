"""Each benchmark runs to its end in a small form, so that a change to the pool cannot silently break one (the
figures are not checked here: benchmarks/ prints them, against baselines measured in the same run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


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
