"""plugins.Joblib and plugins.Mps on a Ray pool: a local `ray.cluster_utils.Cluster` of two simulated A100 nodes,
each with the stand-in nvidia-cuda-mps-control of test_plugins_mps.py on its PATH."""

import os
import sys
import textwrap
import time

import pytest

ray = pytest.importorskip("ray")
joblib = pytest.importorskip("joblib")
import plugin_tasks as P  # noqa: E402
from ray_clusters import simulated_nodes  # noqa: E402
from test_plugins_mps import STANDIN, daemons, gone  # noqa: E402

import migpool  # noqa: E402
from migpool import Compute, Worker, gather, plugins  # noqa: E402
from migpool.pool.api.info import Partition  # noqa: E402
from migpool.pool.api.task import Task  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-plugins")
    bin_dir, records = root / "bin", root / "records"
    bin_dir.mkdir()
    records.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(f"#!{sys.executable}\n" + textwrap.dedent(STANDIN))
    control.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STANDIN_RECORDS": str(records)}
    with simulated_nodes(root, ("n0", "n1"), "plug", head_cpus=1, path=sys.path, env=env):
        yield records


def test_joblib_and_mps_on_every_node(cluster):
    records = cluster
    mig, mps = plugins.Mig(profile="3g.40gb", count=2), plugins.Mps(active_thread_percentage=25)
    with Compute(
        provider=migpool.Ray(node_resource="plug"),
        nodes=2,
        worker=Worker(executor="process"),
        plugins=[mig, mps, plugins.Joblib()],
        progress=False,
    ) as pool:
        started = daemons(records, 4)  # one per partition, 2 on each node
        by_uuid = {d["env"]["CUDA_VISIBLE_DEVICES"]: d for d in started}
        assert set(by_uuid) == {p.uuid for p in pool.partitions}
        assert all(d["env"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25" for d in started)
        names = ("CUDA_MPS_PIPE_DIRECTORY", "MIGPOOL_PARTITION")
        for env in gather(*[Task(P.environment, (names,)) for _ in range(8)]) >> pool:
            uuid = Partition.from_env(env["MIGPOOL_PARTITION"]).uuid
            assert env["CUDA_MPS_PIPE_DIRECTORY"] == by_uuid[uuid]["env"]["CUDA_MPS_PIPE_DIRECTORY"]
        t0 = time.monotonic()
        got = joblib.Parallel(n_jobs=-1)(joblib.delayed(P.nap)(i, 0.5) for i in range(8))
        took = time.monotonic() - t0
    assert [r for r, _ in got] == [2 * i for i in range(8)]
    assert len({pid for _, pid in got}) == 4  # every worker of both nodes
    assert took < 0.6 * 8 * 0.5, took
    stopped = daemons(records, 4, quit=True)
    assert all(gone(d["pid"]) for d in stopped)
