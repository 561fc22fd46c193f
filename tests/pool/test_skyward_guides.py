"""The reference system's own guides, run on migpool with only their import and provider lines changed.

The guides are not copied here: they come from Skyward's source distribution on PyPI (skyward 0.10.0, whose
guides are those of the gabfssilva/skyward repository that migpool follows), downloaded by `.ci/run` into
`.ci-cache/` (or by this test into the user's cache when it is missing). Each guide that needs no cloud account,
no container runtime and no GPU of a kind this machine lacks is run as a script in a fresh interpreter, and what it
prints is checked against what Skyward's guide says it prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import skyward_sdist
from skyward_sdist import ported, run

VERSION = "0.10.0"
pytestmark = pytest.mark.network  # (the source distribution is downloaded when .ci-cache/ and the cache lack it)


@pytest.fixture(scope="module")
def guides(tmp_path_factory) -> Path:
    return skyward_sdist.guides(VERSION, tmp_path_factory.mktemp("skyward-guides"))


def test_01_hello(guides, tmp_path):
    out = run(ported(guides, "01_hello_skyward"), tmp_path)
    assert re.search(r"^2 \+ 3 = 5$", out, re.M), out
    assert "Stats: {'count': 5, 'sum': 15, 'mean': 3.0}" in out, out


def test_02_parallel_execution(guides, tmp_path):
    out = run(ported(guides, "02_parallel_execution"), tmp_path)
    assert "Chunk sums: [6, 15, 24]" in out, out  # a list in task order: 0.12.1's rule (0.10 printed a tuple)
    assert "Products: 6, 20" in out and "Mixed: sum=6, product=200, factorial=120" in out, out
    streamed = [int(x) for x in re.findall(r"^  \[[\d.]+s\] Got: (\d+)$", out, re.M)]
    assert streamed == [1000 * i for i in range(5)], out  # stream=True: in task order as they come


def test_03_broadcast_on_four_local_nodes(guides, tmp_path):
    out = run(ported(guides, "03_broadcast"), tmp_path)
    nodes = re.findall(r"^  Node (\d): (\d+) items, sum=(\d+)$", out, re.M)
    assert [int(n) for n, _, _ in nodes] == [0, 1, 2, 3], out  # one result per node, in node order
    assert sum(int(s) for _, _, s in nodes) == sum(range(1000)) and {int(k) for _, k, _ in nodes} == {250}
    assert f"Total: {sum(range(1000))} (expected: {sum(range(1000))})" in out


def test_05_data_sharding(guides, tmp_path):
    pytest.importorskip("numpy")
    out = run(ported(guides, "05_data_sharding"), tmp_path)
    shards = re.findall(r"^  Node (\d): (\d+) samples, mean=-?[\d.]+$", out, re.M)
    assert shards == [(str(n), "250") for n in range(4)], out  # 1000 samples cut in 4, in node order
    types = re.findall(r"^  Node (\d): list=(\w+), tuple=(\w+), array=(\w+)$", out, re.M)
    assert types == [(str(n), "list", "tuple", "ndarray") for n in range(4)], out


def test_13_streaming(guides, tmp_path):
    out = run(ported(guides, "13_streaming"), tmp_path)
    fib = [int(x) for x in re.findall(r"^  (\d+)$", out.split("Running mean")[0], re.M)]
    assert fib == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34], out
    means = re.findall(r"after (\d) values: ([\d.]+)", out)
    assert [float(m) for _, m in means] == [1.0, 1.5, 2.0, 2.5, 3.0], out
    averages = [float(x) for x in re.findall(r"^  ([\d.]+)$", out.split("Moving average")[1], re.M)]
    assert averages == [1.0, 1.5, 2.0, 3.0, 4.0, 5.0], out


def test_14_worker_executors(guides, tmp_path):
    out = run(ported(guides, "14_worker_executors"), tmp_path, timeout=600)
    for kind in ("thread", "process"):
        done = sorted(int(t) for t in re.findall(rf"^\[{kind}\] Task (\d+): [\d,]+ iters in [\d.]+s$", out, re.M))
        assert done == list(range(20)), out


def test_21_standalone_workers(guides, tmp_path):
    out = run(ported(guides, "21_standalone_workers"), tmp_path)
    chunks = re.findall(r"^Chunk (\d): node=(\d) elapsed=", out, re.M)
    assert [int(c) for c, _ in chunks] == list(range(8)), out  # in task order
    assert {int(n) for _, n in chunks} == {0, 1, 2, 3}, out  # spread over the four nodes


def test_18_nvidia_mig_runs_up_to_its_first_cuda_call_on_a_simulated_gpu(guides, tmp_path):
    """A simulated GPU simulates MIG, not CUDA: the guide brings up its two 3g.40gb partitions and one worker on
    each, and the tasks fail where they first touch CUDA (on a real MIG GPU the guide runs as it is)."""
    pytest.importorskip("torch")
    path = ported(guides, "18_nvidia_mig")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environ.update(MIGPOOL_SIMULATE="A100-80GB", PYTHONUNBUFFERED="1")
    got = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environ
    )
    text = got.stdout + got.stderr
    assert got.returncode != 0, text
    assert re.search(r"CUDA|cuda|NVIDIA driver", text), text  # it got as far as the task's CUDA call
    assert "PluginError" not in text and "MigpoolError" not in text, text  # the partitions and workers came up
