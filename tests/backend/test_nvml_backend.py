"""NvmlBackend against a fake pynvml driven by the simulator: calls, ctypes buffers and error mapping."""

import os

import fake_pynvml
import pytest

import migpool
from migpool import NvmlBackend, SimulatedBackend
from migpool.mig.catalog import Placement
from migpool.mig.hardware import compare_with_catalog
from migpool.reconcile import core as reconcile


@pytest.fixture
def pair():
    sim = SimulatedBackend("H100-80GB,A100-80GB")
    return sim, NvmlBackend(nvml=fake_pynvml.make(sim, non_mig=("NVIDIA T4",)))


def test_reads_gpus_and_profile_tables(pair):
    sim, nv = pair
    gpus = nv.gpus()
    assert [g.name for g in gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA T4"]
    assert [g.mig_capable for g in gpus] == [True, True, False]
    assert [g.device_minor for g in gpus] == [0, 1, 2]
    assert gpus[0].uuid == sim.gpus()[0].uuid and gpus[0].pci_device_id == 0x233010DE
    read = nv.model(0)
    assert read.key == "H100-80GB" and compare_with_catalog(read) == []
    assert sorted(read.profiles, key=lambda p: p.id) == sorted(sim.model(0).profiles, key=lambda p: p.id)
    with pytest.raises(migpool.NotSupportedError):
        nv.model(2)


def test_compare_with_catalog_finds_a_wrong_field(pair):
    import dataclasses

    _, nv = pair
    read = nv.model(0)
    bad = dataclasses.replace(read, profiles=(dataclasses.replace(read.profiles[0], sms=99),) + read.profiles[1:])
    assert compare_with_catalog(bad) == ["1g.10gb: sms is 99 on the GPU, 16 in the catalog"]


def test_apply_through_nvml_and_read_back(pair):
    sim, nv = pair
    res = reconcile.apply({"3g.40gb": 1, "1g.10gb": 2}, nv, gpus=[1])
    assert len(res.mig_devices) == 3
    assert [str(a.instance) for a in reconcile.actual_instances(nv, 1)] == [
        str(a.instance) for a in reconcile.actual_instances(sim, 1)
    ]
    assert [d.uuid for d in nv.mig_devices(1)] == [d.uuid for d in sim.mig_devices(1)]
    assert reconcile.apply({"3g.40gb": 1, "1g.10gb": 2}, nv, gpus=[1]).operations == []
    sim.register_process(1, os.getpid(), "pytest", nv.mig_devices(1)[0].uuid, 1024)
    procs = nv.processes(1)
    assert [(p.pid, p.used_memory_mib, p.device_uuid) for p in procs] == [
        (os.getpid(), 1024, nv.mig_devices(1)[0].uuid)
    ]
    assert nv.mig_devices(1)[0].memory_used_mib == 1024


@pytest.mark.parametrize(
    "fault,exc",
    [
        ("insufficient_resources", migpool.InsufficientResourcesError),
        ("in_use", migpool.InUseError),
        ("not_found", migpool.NotFoundError),
        ("reset_required", migpool.ResetRequiredError),
        ("not_supported", migpool.NotSupportedError),
    ],
)
def test_nvml_error_codes_map_to_migpool_errors(pair, fault, exc):
    sim, nv = pair
    nv.set_mig_mode(0, True)
    sim.inject(fail_at=1, error=fault)
    with pytest.raises(exc, match=r"create GPU instance .*NVML: "):
        nv.create_gpu_instance(0, 9, Placement(0, 4))


def test_no_permission_is_explained():
    sim = SimulatedBackend("A100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim, no_permission=True))
    with pytest.raises(migpool.NoPermissionError, match="root"):
        nv.set_mig_mode(0, True)


def test_read_only_stops_before_nvml(pair, monkeypatch):
    sim, nv = pair
    monkeypatch.setenv("MIGPOOL_READ_ONLY", "1")
    before = list(nv.nvml.calls)
    for call in (
        lambda: nv.set_mig_mode(0, True),
        lambda: nv.create_gpu_instance(0, 9, Placement(0, 4)),
        lambda: nv.destroy_gpu_instance(0, 1),
        lambda: nv.create_compute_instance(0, 1),
        lambda: nv.destroy_compute_instance(0, 1, 0),
        lambda: nv.reset_gpu(0),
    ):
        with pytest.raises(migpool.ReadOnlyError):
            call()
    assert nv.nvml.calls == before  # not one NVML call was made


def _gpu_reporting(key, **changes):
    """A simulated machine whose one GPU reports a table that differs from the shipped catalog row."""
    import dataclasses

    sim = SimulatedBackend(key)
    model = sim.models[0]
    profiles = tuple(dataclasses.replace(p, **{k: v(p) for k, v in changes.items()}) for p in model.profiles)
    sim.models[0] = dataclasses.replace(model, profiles=profiles)
    return sim, NvmlBackend(nvml=fake_pynvml.make(sim))


def test_catalog_check_save_makes_the_driver_table_the_catalog(monkeypatch):
    from click.testing import CliRunner

    from migpool.cli import commands as cli
    from migpool.mig import catalog

    sim, nv = _gpu_reporting("H200-NVL-141GB", memory_mib=lambda p: p.memory_mib - 512)
    assert catalog.lookup("H200-NVL-141GB").memory_estimated
    monkeypatch.setattr("migpool.cli.app.open_backend", lambda spec=None: nv)
    r = CliRunner().invoke(cli.main, ["catalog", "check"])
    assert r.exit_code == 1 and "memory_mib is 15872 on the GPU, 16384 in the catalog" in r.output
    r = CliRunner().invoke(cli.main, ["catalog", "check", "--save"])
    assert r.exit_code == 0 and str(catalog.user_catalog_path()) in r.output.replace("\n", "")
    saved = catalog.lookup("NVIDIA H200 NVL")
    assert saved.profile("1g.18gb").memory_mib == 15872 and not saved.estimated and saved.source == "user"
    assert compare_with_catalog(nv.model(0)) == []
    assert {m.key for m in catalog.models()}.issuperset({"H200-NVL-141GB", "H100-80GB"})  # the rest is still there
    r = CliRunner().invoke(cli.main, ["catalog", "check"])
    assert r.exit_code == 0 and "matches the catalog" in r.output


def test_a_damaged_user_catalog_is_named():
    from migpool.mig import catalog

    path = catalog.user_catalog_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    catalog.reload()
    with pytest.raises(migpool.CatalogError, match="user catalog .* cannot be read") as e:
        catalog.lookup("A100")
    assert str(path) in str(e.value)


def test_a_gpu_missing_from_the_catalog_works_from_the_driver_table():
    """On real hardware the driver's table is the truth: an unlisted GPU plans and applies."""
    import dataclasses

    sim = SimulatedBackend("A100-80GB")
    sim.models[0] = dataclasses.replace(sim.models[0], nvml_names=("NVIDIA A100X Future",), key="future")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim))
    model = nv.model(0)
    assert model.name == "NVIDIA A100X Future" and "not in the catalog" in compare_with_catalog(model)[0]
    res = reconcile.apply({"3g.40gb": 2}, nv)
    assert len(res.mig_devices) == 2


def test_slurm_export_on_nvml_names_device_files_from_the_drivers_minors(pair, tmp_path, monkeypatch):
    from migpool.host import devicefiles
    from migpool.integrations import slurm
    from migpool.reconcile import persist

    sim, nv = pair
    reconcile.apply({"3g.40gb": 2}, sim, gpus=[0])
    table = tmp_path / "mig-minors"
    table.write_text("".join(f"{k} {v}\n" for k, v in devicefiles.standard_minors([0, 1, 2]).items()))
    monkeypatch.setattr(devicefiles, "MIG_MINORS", table)
    node = slurm.node_gres(nv, persist.current_layouts(nv), "n")
    assert node.gres == "gpu:3g.40gb:2,gpu:a100-80gb:1,gpu:t4:1"  # a GPU outside the catalog is typed by its name
    assert {d.uuid for d in node.devices[:2]} == {m.uuid for m in sim.mig_devices(0)}
    table.unlink()
    with pytest.raises(migpool.NotFoundError, match="mig-minors is missing"):
        slurm.node_gres(nv, persist.current_layouts(nv), "n")


def test_a_mig_device_read_through_nvml_knows_its_gpu(pair):
    sim, nv = pair
    reconcile.apply({"3g.40gb": 2}, nv, gpus=[0])
    parents = {d.parent for d in nv.mig_devices(0)}
    g = nv.gpus()[0]
    assert parents == {migpool.backend.GpuRef(0, g.uuid, "NVIDIA H100 80GB HBM3")} and g.uuid == sim.gpus()[0].uuid
