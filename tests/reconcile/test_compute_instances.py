"""Compute-instance profiles (`1c.3g.40gb`: a 1-slice compute instance inside a 3g.40gb GPU instance) end to end:
catalog, packing as mig-parted packs them, plans, apply with the fewest changes, the journal, the fake NVML, the
pool and the CLI."""

import os

import fake_pynvml
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migpool_cli import mp

import migpool
from migpool import Layout, NvmlBackend
from migpool.mig import catalog
from migpool.mig.layout import pack
from migpool.reconcile import core as reconcile


def _shapes(model: str, spec: str) -> list[tuple[str, list[str]]]:
    gpu = catalog.lookup(model)
    return [(gi.name, [c.name for c in cis]) for gi, cis in pack(Layout.of(spec).devices(gpu))]


@pytest.mark.parametrize(
    ("spec", "shapes"),
    [
        ("1c.3g.20gb:4", [("3g.20gb", ["1c.3g.20gb"] * 3), ("3g.20gb", ["1c.3g.20gb"])]),
        ("2c.3g.20gb:2,1c.3g.20gb:1", [("3g.20gb", ["2c.3g.20gb"]), ("3g.20gb", ["2c.3g.20gb", "1c.3g.20gb"])]),
        ("3g.20gb:1,1c.3g.20gb:2", [("3g.20gb", ["3g.20gb"]), ("3g.20gb", ["1c.3g.20gb"] * 2)]),
        ("1c.7g.40gb:1", [("7g.40gb", ["1c.7g.40gb"])]),
        ("3c.7g.40gb:2,1c.7g.40gb:1", [("7g.40gb", ["3c.7g.40gb", "3c.7g.40gb", "1c.7g.40gb"])]),
        ("1c.1g.5gb+me:1", [("1g.5gb+me", ["1g.5gb+me"])]),  # 1c of a 1-slice profile is the profile itself
        ("2c.4g.20gb:2", [("4g.20gb", ["2c.4g.20gb"] * 2)]),
    ],
)
def test_devices_are_packed_into_gpu_instances_as_mig_parted_packs_them(spec, shapes):
    """mig-parted's order (GPU-instance slices, then compute slices, largest first), each compute instance put in
    the GPU instance made just before it where it fits there."""
    assert _shapes("A100-40GB", spec) == shapes


def test_unknown_compute_instances_name_what_the_profile_offers():
    gpu = catalog.lookup("H100-80GB")
    with pytest.raises(migpool.ProfileError, match="not a compute instance 3g.40gb offers.*valid: 1c.3g.40gb, "):
        gpu.device("4c.3g.40gb")
    with pytest.raises(migpool.ProfileError, match="a GPU-instance profile is wanted here"):
        gpu.profile("1c.3g.40gb")
    assert (
        migpool.mig.planner.max_devices(gpu, "1c.3g.40gb") == 6
        and migpool.mig.planner.max_devices(gpu, "2c.7g.80gb") == 3
    )


def test_apply_idempotent_and_asserted(sim):
    b = sim("A100-80GB")
    res = migpool.apply({"1c.3g.40gb": 4, "2c.3g.40gb": 1}, b)
    assert [o.kind for o in res.operations].count("create-gi") == 2
    assert sorted(d.profile_name for d in b.mig_devices(0)) == ["1c.3g.40gb"] * 4 + ["2c.3g.40gb"]
    assert migpool.apply({"1c.3g.40gb": 4, "2c.3g.40gb": 1}, b).operations == []
    assert migpool.diff({"1c.3g.40gb": 4, "2c.3g.40gb": 1}, b) == []
    assert migpool.diff({"1c.3g.40gb": 5}, b) == [
        "GPU 0: 1c.3g.40gb: want 5, have 4",
        "GPU 0: 2c.3g.40gb: want 0, have 1",
    ]


def test_a_change_inside_a_gpu_instance_touches_only_its_compute_instances(sim):
    b = sim("A100-80GB")
    migpool.apply({"1c.3g.40gb": 4}, b)  # [1c, 1c, 1c] and [1c]
    gis = {g.id: g.placement for g in b.gpu_instances(0)}
    before = {d.uuid for d in b.mig_devices(0)}
    res = migpool.apply({"1c.3g.40gb": 5}, b)  # one more: added beside the lone one
    assert [str(o) for o in res.operations] == ["GPU 0: create-ci 1c.3g.40gb at 4:4"]
    assert before < {d.uuid for d in b.mig_devices(0)} and {g.id: g.placement for g in b.gpu_instances(0)} == gis
    res = migpool.apply({"1c.3g.40gb": 3, "2c.3g.40gb": 1}, b)  # two 1c go from one GPU instance, a 2c comes
    assert sorted(o.kind for o in res.operations) == ["create-ci", "destroy-ci", "destroy-ci"]
    assert {g.id: g.placement for g in b.gpu_instances(0)} == gis


def test_a_compute_instance_in_use_is_kept_or_the_change_refused(sim):
    b = sim("A100-80GB")
    migpool.apply({"1c.3g.40gb": 2}, b)  # one GPU instance holding two
    busy = b.mig_devices(0)[1]
    b.register_process(0, os.getpid(), "trainer", busy.uuid)
    res = migpool.apply({"1c.3g.40gb": 1}, b)  # the idle one goes
    assert [d.uuid for d in b.mig_devices(0)] == [busy.uuid] and len(res.operations) == 1
    with pytest.raises(migpool.InUseError, match=f"PID {os.getpid()} \\(trainer\\)"):
        migpool.apply({"3g.40gb": 1}, b)  # remaking it would destroy the one in use
    assert [d.uuid for d in b.mig_devices(0)] == [busy.uuid]
    b.unregister_process(os.getpid())


def test_restore_brings_back_the_prior_compute_instances(sim):
    b = sim("A100-80GB")
    migpool.apply({"2c.3g.40gb": 1, "1c.3g.40gb": 1, "1g.10gb": 2}, b)
    before = sorted((d.profile_name, str(d.placement)) for d in b.mig_devices(0))
    from migpool.host.journal import Journal

    Journal(b.state_dirs().journal(), b.state_dirs().locks() / "journal.lock").forget(b.gpus()[0].uuid)
    migpool.apply({"7g.80gb": 1}, b)  # the journal keeps the state before this change, compute instances too
    migpool.teardown(b, restore=True)
    assert sorted((d.profile_name, str(d.placement)) for d in b.mig_devices(0)) == before


def test_journal_records_without_compute_instances_still_read(sim, tmp_path):
    from migpool.host.journal import InstanceRecord, Journal

    j = Journal(tmp_path / "journal.json", tmp_path / "journal.lock")
    (tmp_path / "journal.json").write_text(
        '{"GPU-x": {"prior": {"mig_enabled": true, "instances": [{"profile": "3g.40gb", "start": 0, "size": 4}]},'
        ' "created": []}}'
    )
    assert j.prior("GPU-x") == (True, [InstanceRecord("3g.40gb", 0, 4)])
    (tmp_path / "journal.json").write_text(
        '{"GPU-x": {"prior": {"mig_enabled": true, "instances": [{"profile": "3g.40gb", "start": 0, "size": 4,'
        ' "cis": [0]}]}, "created": []}}'
    )
    with pytest.raises(migpool.DamagedFileError, match="cis"):
        j.prior("GPU-x")


def test_through_the_nvml_backend_with_nvmls_compute_instance_profiles():
    sim = migpool.SimulatedBackend("H100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim))
    reconcile.apply({"1c.3g.40gb": 2, "2c.7g.80gb": 0, "3g.40gb": 1}, nv)
    assert sorted(c.profile_name for c in nv.compute_instances(0)) == ["1c.3g.40gb", "1c.3g.40gb", "3g.40gb"]
    assert [(c.slices, c.start) for c in nv.compute_instances(0) if c.slices == 1] == [(1, 0), (1, 1)]
    assert reconcile.diff({"1c.3g.40gb": 2, "3g.40gb": 1}, nv) == []
    assert reconcile.apply({"1c.3g.40gb": 2, "3g.40gb": 1}, nv).operations == []
    gi = next(g for g in nv.gpu_instances(0) if any(c.gi_id == g.id and c.slices == 1 for c in nv.compute_instances(0)))
    nv.create_compute_instance(0, gi.id, 1)  # the third 1-slice one fits
    with pytest.raises(migpool.InsufficientResourcesError):
        nv.create_compute_instance(0, gi.id, 1)  # a fourth does not: NVML's "insufficient resources"


def test_a_pool_runs_one_worker_per_compute_instance():
    import pool_tasks as T

    with migpool.Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        plugins=[migpool.plugins.mig(profile="1c.3g.40gb", count="all", restore=True)],
        progress=False,
    ) as pool:
        got = migpool.gather(*[T.where(0.3) for _ in range(6)]) >> pool
        parts = [w.spec.partition for w in pool.scheduler.workers]
    assert len(parts) == 6 and len({p.uuid for p in parts}) == 6
    assert {p.profile for p in parts} == {"1c.3g.40gb"} and {p.memory_mib for p in parts} == {40192}
    assert {g["cuda"] for g in got} <= {p.uuid for p in parts}


def test_the_cli_plans_applies_shows_and_exports_compute_instances(monkeypatch):
    sim = ["--simulate", "A100-80GB"]
    plan = mp("plan", "1c.3g.40gb", "-n", "4", *sim)
    assert plan.returncode == 0 and "0:4   1c 1c 1c" in plan.stdout and "4:4   1c" in plan.stdout
    assert mp("apply", "1c.3g.40gb:4,2c.3g.40gb:1", *sim).returncode == 0
    status = mp("status", *sim, "--json")
    assert sorted(d["profile_name"] for d in __import__("json").loads(status.stdout)["gpus"][0]["mig_devices"]) == [
        "1c.3g.40gb",
        "1c.3g.40gb",
        "1c.3g.40gb",
        "1c.3g.40gb",
        "2c.3g.40gb",
    ]
    exported = mp("export", *sim).stdout
    assert "1c.3g.40gb: 4" in exported and "2c.3g.40gb: 1" in exported
    assert mp("assert", "1c.3g.40gb:4,2c.3g.40gb:1", *sim).returncode == 0
    r = mp("apply", "4c.3g.40gb", *sim)
    assert r.returncode == 2 and "not a compute instance 3g.40gb offers" in r.stderr


MODELS = ["A100-40GB", "A30-24GB", "H100-80GB", "RTX-PRO-6000"]


@st.composite
def _layouts(draw):
    model = catalog.lookup(draw(st.sampled_from(MODELS)))
    devices = [d for d in model.devices if d.gi.plain]
    chosen = draw(st.lists(st.sampled_from(devices), min_size=1, max_size=4, unique=True))
    return model.key, {d.name: draw(st.integers(1, 4)) for d in chosen}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_layouts(), second=st.data())
def test_any_layout_that_fits_applies_exactly_and_converges(sim, first, second):
    """Whatever mix of devices: where the planner finds room, the GPU ends holding exactly the asked devices, a
    second apply does nothing, and a change to another mix lands exactly too."""
    key, counts = first
    b = sim(key)
    layouts = [counts, second.draw(_layouts().filter(lambda lc: lc[0] == key))[1]]
    for want in layouts:
        try:
            migpool.apply(want, b)
        except migpool.LayoutError:
            continue
        assert migpool.diff(want, b) == []
        assert migpool.apply(want, b).operations == []
    migpool.teardown(b, restore=True)
    assert not b.gpus()[0].mig_current
