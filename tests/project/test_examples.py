"""The example, the demo, and the reference document's API surface, end to end in simulation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pool_tasks as T
import pytest

import migpool as sky

ROOT = Path(__file__).resolve().parents[2]


def test_reference_api_surface_runs_in_simulation(monkeypatch):
    """Compute(provider=Verda(), nodes=1, accelerator=accelerators.A100(), Worker, Image, plugins.mig), gather
    with stream=True, instance_info(): the reference document's names, accepted as they are."""
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    with sky.Compute(
        provider=sky.Verda(),
        nodes=1,
        accelerator=sky.accelerators.A100(),
        worker=sky.Worker(concurrency=2, executor="process"),
        image=sky.Image(pip=["cloudpickle"]),
        plugins=[sky.plugins.mig(profile="3g.40gb")],
        progress=False,
    ) as pool:
        results = list(sky.gather(*[T.where() for _ in range(2)], stream=True) >> pool)
    assert sorted(r["info"].worker for r in results) == [0, 1]
    assert all(r["cuda"].startswith("MIG-") for r in results)


def test_accelerator_and_nodes_are_checked(monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", "H100-80GB")
    with pytest.raises(sky.PluginError, match="not A100"):
        with sky.Compute(accelerator=sky.accelerators.A100(), plugins=[sky.plugins.mig(profile="3g.40gb")]):
            pass
    assert sky.SimulatedBackend("H100-80GB").operations() == 0
    with pytest.raises(sky.PluginError, match="not L40S"):  # a name, as the reference takes it
        with sky.Compute(accelerator="L40S"):
            pass
    with sky.Compute(accelerator="H100", worker=sky.Worker(concurrency=1, executor="process"), progress=False) as c:
        assert c.run(T.add(1)) == 1
    a = sky.accelerators
    assert a.A100().matches("NVIDIA A100-SXM4-80GB") and not a.A10().matches("NVIDIA A100-SXM4-80GB")
    assert a.RTX_4090().matches("NVIDIA GeForce RTX 4090") and not a.H200().matches("NVIDIA GH200 480GB")
    assert a.L4() == a.Custom("L4") and a.T4G().family == "T4G" and a.RTX_PRO_6000().family == "RTX PRO 6000"
    with pytest.raises(sky.PluginError, match="nodes must be a whole number"):
        sky.Compute(nodes=0)
    with sky.Compute(nodes=2, worker=sky.Worker(executor="thread"), progress=False) as c:  # issue 42: allowed
        assert c.current_nodes() == 2 and len({r["pid"] for r in T.where() @ c}) == 2


def test_whole_gpu_pinning_by_uuid(monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", "H100-80GB:2")
    with sky.Compute(
        worker=sky.Worker(concurrency=3, executor="process"), plugins=[sky.plugins.gpus("all")], progress=False
    ) as pool:
        rs = sky.gather(*[T.where() for _ in range(6)]) >> pool
    uuids = [g.uuid for g in sky.SimulatedBackend("H100-80GB:2").gpus()]
    by_worker = {r["info"].worker: r["initial_cuda"] for r in rs}
    assert all(by_worker[w] == uuids[w % 2] for w in by_worker)


def test_example_trains_on_two_simulated_partitions():
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import nvidia_mig
    finally:
        sys.path.pop(0)
    results = nvidia_mig.main(["--simulate", "A100-80GB", "--epochs", "3"])
    assert sorted(r["worker"] for r in results) == [0, 1]
    assert len({r["partition"] for r in results}) == 2 and all(r["partition"].startswith("MIG-") for r in results)
    assert all(r["accuracy"] > 30 for r in results)  # 10 classes: chance is 10%; the rule is learnable


def test_demo_command_runs_and_restores():
    env = dict(os.environ, COLUMNS="200")
    r = subprocess.run([sys.executable, "-m", "migpool", "demo"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("MIG-") == 5 and "3g.40gb" in r.stdout and "1g.10gb" in r.stdout
    g = json.loads(
        subprocess.run(
            [sys.executable, "-m", "migpool", "gpus", "--simulate", "A100-80GB", "--json"],
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    )[0]
    assert g["mig_current"] is False


@pytest.mark.parametrize(
    "argv",
    [["examples/nvidia_mig.py", "--simulate", "A100-80GB"], ["-m", "migpool", "demo", "--simulate", "A100-80GB"]],
)
def test_expected_refusals_print_one_line_not_a_traceback(argv):
    """Under MIGPOOL_READ_ONLY the example and the demo refuse with a clear message and exit 2, changing nothing."""
    env = dict(os.environ, MIGPOOL_READ_ONLY="1", COLUMNS="80")
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: MIGPOOL_READ_ONLY is set")
    assert sky.SimulatedBackend("A100-80GB").operations() == 0
