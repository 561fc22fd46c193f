import os
import re
import subprocess
import sys

import pytest

import migpool
from migpool import SimulatedBackend
from migpool.mig.catalog import Placement

MIG_UUID = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_spec_forms():
    assert [g.name for g in SimulatedBackend("H100-80GB:2").gpus()] == ["NVIDIA H100 80GB HBM3"] * 2
    assert [g.name for g in SimulatedBackend("A100-40GB,H100-80GB").gpus()] == [
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA H100 80GB HBM3",
    ]
    with pytest.raises(migpool.CatalogError):
        SimulatedBackend("V100")
    with pytest.raises(migpool.BackendError, match="MODEL\\[:COUNT\\]"):
        SimulatedBackend("A100-80GB:x")


def test_gi_creation_follows_placement_rules(sim):
    b = sim("A100-80GB")
    p3 = b.model(0).profile("3g.40gb")
    with pytest.raises(migpool.NotSupportedError, match="not in MIG mode"):
        b.create_gpu_instance(0, p3.id, Placement(0, 4))
    assert b.set_mig_mode(0, True) is True
    with pytest.raises(migpool.errors.InvalidArgumentError, match="legal: \\{0,4\\}:4"):
        b.create_gpu_instance(0, p3.id, Placement(2, 4))
    b.create_gpu_instance(0, p3.id, Placement(0, 4))
    with pytest.raises(migpool.InsufficientResourcesError):
        b.create_gpu_instance(0, b.model(0).profile("4g.40gb").id, Placement(0, 4))
    b.create_gpu_instance(0, p3.id, Placement(4, 4))
    with pytest.raises(migpool.InsufficientResourcesError):
        b.create_gpu_instance(0, b.model(0).profile("1g.10gb").id, Placement(6, 1))


def test_me_profile_is_limited_to_one(sim):
    b = sim("H100-80GB")
    b.set_mig_mode(0, True)
    me = b.model(0).profile("1g.10gb+me")
    b.create_gpu_instance(0, me.id, Placement(0, 1))
    with pytest.raises(migpool.InsufficientResourcesError):
        b.create_gpu_instance(0, me.id, Placement(1, 1))


def test_cis_uuids_and_destroy_rules(sim):
    b = sim("A100-80GB")
    b.set_mig_mode(0, True)
    gi = b.create_gpu_instance(0, 9, Placement(4, 4))
    assert gi.id == 2  # the driver's id for the second half of the GPU
    ci = b.create_compute_instance(0, gi.id)
    (dev,) = b.mig_devices(0)
    assert MIG_UUID.match(dev.uuid) and dev.profile_name == "3g.40gb" and dev.memory_mib == 40192
    assert b.mig_devices(0)[0].uuid == dev.uuid  # stable
    with pytest.raises(migpool.InUseError, match="compute instances"):
        b.destroy_gpu_instance(0, gi.id)
    b.register_process(0, os.getpid(), "python", dev.uuid)
    with pytest.raises(migpool.InUseError, match="python"):
        b.destroy_compute_instance(0, gi.id, ci.id)
    b.unregister_process(os.getpid())
    b.destroy_compute_instance(0, gi.id, ci.id)
    b.destroy_gpu_instance(0, gi.id)
    with pytest.raises(migpool.NotFoundError):
        b.destroy_gpu_instance(0, gi.id)


def test_partial_compute_instances(sim):
    b = sim("A100-80GB")
    b.set_mig_mode(0, True)
    gi = b.create_gpu_instance(0, 9, Placement(0, 4))
    b.create_compute_instance(0, gi.id, 1)
    b.create_compute_instance(0, gi.id, 2)
    assert [c.profile_name for c in b.compute_instances(0)] == ["1c.3g.40gb", "2c.3g.40gb"]
    with pytest.raises(migpool.InsufficientResourcesError):
        b.create_compute_instance(0, gi.id, 1)


def test_mig_mode_refused_while_processes_use_the_gpu(sim):
    b = sim()
    b.register_process(0, os.getpid(), "trainer")
    with pytest.raises(migpool.InUseError, match="trainer"):
        b.set_mig_mode(0, True)


def test_dead_processes_vanish(sim):
    b = sim()
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    b.register_process(0, p.pid, "gone")
    assert b.processes(0) == []


def test_pending_reset(sim):
    b = sim()
    b.set_reset_blockers(0, ["nvidia-persistenced"])
    assert b.set_mig_mode(0, True) is False
    g = b.gpus()[0]
    assert (g.mig_current, g.mig_pending) == (False, True) and "reset required" in g.mig_mode
    with pytest.raises(migpool.ResetRequiredError):
        b.create_gpu_instance(0, 9, Placement(0, 4))
    with pytest.raises(migpool.InUseError, match="nvidia-persistenced"):
        b.reset_gpu(0)
    b.set_reset_blockers(0, [])
    b.reset_gpu(0)
    assert b.gpus()[0].mig_current is True


def test_state_is_shared_between_processes(sim):
    b = sim("H100-80GB:2")
    b.set_mig_mode(1, True)
    code = "import migpool; b = migpool.SimulatedBackend('H100-80GB:2'); print(b.gpus()[1].mig_current)"
    outp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert outp.stdout.strip() == "True"


def test_injected_failure_and_transient_in_use(sim):
    b = sim()
    b.set_mig_mode(0, True)
    b.inject(fail_at=1, error="insufficient_resources")
    with pytest.raises(migpool.InsufficientResourcesError, match="injected"):
        b.create_gpu_instance(0, 9, Placement(0, 4))
    gi = b.create_gpu_instance(0, 9, Placement(0, 4))
    b.inject(transient_ops=2)
    b.destroy_gpu_instance(0, gi.id)
    with pytest.raises(migpool.InsufficientResourcesError, match="still being released"):
        b.create_gpu_instance(0, 9, Placement(0, 4))
    with pytest.raises(migpool.InsufficientResourcesError):
        b.create_gpu_instance(0, 9, Placement(0, 4))
    b.create_gpu_instance(0, 9, Placement(0, 4))


def test_kill_at_operation(sim):
    b = sim()
    b.inject(kill_at=1)
    code = "import migpool; migpool.SimulatedBackend('A100-80GB').set_mig_mode(0, True)"
    r = subprocess.run([sys.executable, "-c", code], env=os.environ)
    assert r.returncode == -9
    assert b.gpus()[0].mig_current is False and b.operations() == 0
    b.set_mig_mode(0, True)  # the fault fired once and is gone
    assert b.gpus()[0].mig_current


def test_read_only_refuses_every_mutation(sim, monkeypatch):
    b = sim()
    monkeypatch.setenv("MIGPOOL_READ_ONLY", "1")
    for call in (
        lambda: b.set_mig_mode(0, True),
        lambda: b.create_gpu_instance(0, 9, Placement(0, 4)),
        lambda: b.destroy_gpu_instance(0, 1),
        lambda: b.create_compute_instance(0, 1),
        lambda: b.destroy_compute_instance(0, 1, 0),
        lambda: b.reset_gpu(0),
    ):
        with pytest.raises(migpool.ReadOnlyError, match="MIGPOOL_READ_ONLY"):
            call()
    assert b.operations() == 0


@pytest.mark.parametrize("damage", ['{"spec": "A100-80GB", "gpus": [', "[]", '{"spec": "A100-80GB", "gpus": []}'])
def test_a_damaged_state_file_is_refused_not_replaced(sim, damage):
    b = sim("A100-80GB")
    b.set_mig_mode(0, True)
    b.path.write_text(damage)
    with pytest.raises(migpool.BackendError, match="state file .* is damaged") as e:
        b.gpus()
    assert str(b.path) in str(e.value) and "Delete that file" in str(e.value)
    assert b.path.read_text() == damage  # nothing was overwritten
    env = dict(os.environ, COLUMNS="80")
    r = subprocess.run(
        [sys.executable, "-m", "migpool", "status", "--simulate", "A100-80GB"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(b.path) in r.stderr.replace("\n", "")
    b.path.unlink()
    assert b.gpus()[0].mig_current is False  # the documented reset: a freshly booted machine


def test_operations_can_take_what_they_take_on_hardware(monkeypatch):
    import time

    monkeypatch.setenv("MIGPOOL_SIM_LATENCY", "hardware")
    b = SimulatedBackend("A100-80GB")
    assert b.latency == {"create_gpu_instance": 0.092, "destroy_gpu_instance": 0.142}
    b.set_mig_mode(0, True)
    t = time.perf_counter()
    gi = b.create_gpu_instance(0, 9, Placement(0, 4))
    b.destroy_gpu_instance(0, gi.id)
    assert time.perf_counter() - t >= 0.092 + 0.142
    fast = SimulatedBackend("A100-80GB", latency={"create_gpu_instance": 0.0})
    assert fast.latency == {"create_gpu_instance": 0.0}
    with pytest.raises(migpool.BackendError, match="MIGPOOL_SIM_LATENCY item 'create=1'"):
        SimulatedBackend("A100-80GB", latency="create=1")


def test_a_mig_instance_knows_its_gpu(sim):
    """A MIG device the driver reports is the one MIG-instance value: its GPU (`parent`) with index, UUID and
    model, as nvitop's MigDevice knows its physical device."""
    from migpool.backend import GpuRef, MigDeviceInfo, MigInstance

    b = sim("H100-80GB,A100-80GB")
    b.set_mig_mode(1, True)
    gi = b.create_gpu_instance(1, b.model(1).profile("3g.40gb").id, Placement(4, 4))
    b.create_compute_instance(1, gi.id)
    (dev,) = b.mig_devices(1)
    assert isinstance(dev, MigInstance) and MigDeviceInfo is MigInstance
    assert dev.parent == GpuRef(1, b.gpus()[1].uuid, b.gpus()[1].name) and dev.parent.name == "NVIDIA A100-SXM4-80GB"
