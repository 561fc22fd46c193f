"""Read-only tests on a real NVIDIA GPU (pytest -m gpu tests/gpu). They never change MIG mode or layout:
MIGPOOL_READ_ONLY=1 is forced for every test and every command they start."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import migpool
from migpool import NvmlBackend
from migpool.mig.catalog import find_by_nvml_name, format_placements
from migpool.mig.hardware import compare_with_catalog
from migpool.mig.planner import max_addable, plan
from migpool.reconcile import core as reconcile

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def mp(*args):
    env = dict(os.environ, MIGPOOL_READ_ONLY="1", COLUMNS="200")
    env.pop("MIGPOOL_SIMULATE", None)
    return subprocess.run([sys.executable, "-m", "migpool", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def nv():
    b = NvmlBackend()
    yield b
    b.close()


def test_nvml_reads_the_gpu_and_it_matches_the_catalog(nv):
    g = nv.gpus()[0]
    assert g.uuid.startswith("GPU-") and g.memory_mib > 1000 and g.name.startswith("NVIDIA")
    print(f"\n{g.name} {g.uuid} {g.memory_mib} MiB MIG capable={g.mig_capable} mode={g.mig_mode}")
    if not g.mig_capable:
        pytest.skip(f"{g.name} is not MIG-capable")
    read = nv.model(0)
    for p in sorted(read.profiles, key=lambda p: p.nvml_index):
        print(
            f"  {p.nvml_index:>2} id {p.id:>2} {p.name:<11} {p.memory_mib} MiB {p.sms} SMs ×{p.max_instances} "
            f"{format_placements(p.placements)}"
        )
    assert find_by_nvml_name(g.name) is not None, f"{g.name} is missing from the catalog"
    assert compare_with_catalog(read) == []  # the catalog is wrong, not the card, if this fails


def _picks(model):
    """Profiles chosen from the card's own table, never by name: the smallest plain one, one of which two fit
    (the largest such), and a mix of the two that fits."""
    plain = [p for p in model.profiles if p.plain]
    small = min(plain, key=lambda p: (p.memory_mib, p.slices))
    two = max((p for p in plain if p.max_instances >= 2), key=lambda p: (p.slices, p.memory_mib))
    room = max_addable(model, small, plan(model, {two.name: 1}))
    return small, two, {two.name: 1, small.name: room}


def test_cli_reads_and_plans_on_the_real_gpu(nv):
    model = nv.model(0)
    gpus = json.loads(mp("gpus", "--json").stdout)
    assert gpus[0]["uuid"] == nv.gpus()[0].uuid
    prof = json.loads(mp("profiles", "--json").stdout)[0]["profiles"]
    assert {p["name"]: p["placements"] for p in prof} == {
        p.name: format_placements(p.placements) for p in model.profiles
    }
    small, two, mix = _picks(model)
    print(f"\nchosen from the card's table: {small.name} (smallest), {two.name} (two fit), mix {mix}")
    r = mp("plan", two.name, "-n", "2", "--json")
    assert r.returncode == 0, r.stderr
    want = sorted(str(i) for i in plan(model, {two.name: 2}))
    assert sorted(json.loads(r.stdout)["gpus"][0]["create"]) == want and len(want) == 2
    r = mp("plan", ",".join(f"{k}:{n}" for k, n in mix.items()), "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)["gpus"][0]["create"]) == sorted(str(i) for i in plan(model, mix))
    inside = two.compute_profiles[0]  # its smallest compute instance: several in one GPU instance
    r = mp("plan", inside.name, "-n", str(inside.instances), "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["gpus"][0]["create"]) == 1  # they share one GPU instance
    shown = mp("plan", two.name, "-n", "2")
    assert shown.returncode == 0 and two.name in shown.stdout
    print(shown.stdout)


def test_apply_refuses_before_any_change_in_read_only_mode(nv):
    before = nv.gpus()[0]
    _, two, _ = _picks(nv.model(0))
    r = mp("apply", two.name, "-n", "2")
    assert r.returncode == 2 and "MIGPOOL_READ_ONLY is set" in r.stderr and "enable-mig" in r.stderr, r.stderr
    after = nv.gpus()[0]
    assert (after.mig_current, after.mig_pending) == (before.mig_current, before.mig_pending)
    assert reconcile.actual_instances(nv, 0) == [] or before.mig_current
    print(r.stderr)


def test_pool_runs_torch_on_the_whole_gpu_pinned_by_uuid(nv):
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import nvidia_mig
    finally:
        sys.path.pop(0)
    results = nvidia_mig.main(["--whole-gpu", "0", "--partitions", "2", "--epochs", "5"])
    uuid = nv.gpus()[0].uuid
    assert sorted(r["worker"] for r in results) == [0, 1]
    assert all(r["partition"] == uuid for r in results)
    assert all(r["device"] == nv.gpus()[0].name for r in results)
    assert all(r["accuracy"] > 50 for r in results)


HOLDER = (
    "import sys, time, torch; x = torch.empty(256 * 2**20, dtype=torch.uint8, device='cuda'); "
    "print('ready', flush=True); time.sleep(120)"
)


def test_pre_apply_check_names_a_real_process_on_the_gpu(nv):
    pytest.importorskip("torch")
    p = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while p.pid not in {x.pid for x in nv.processes(0)} and time.monotonic() < deadline:
            time.sleep(0.5)
        procs = {x.pid: x for x in nv.processes(0)}
        assert p.pid in procs, f"NVML lists {procs}"
        assert procs[p.pid].used_memory_mib >= 256 and procs[p.pid].name.startswith("python")
        if nv.gpus()[0].mig_current:
            pytest.skip("MIG is already enabled here; the enable-MIG check does not apply")
        _, two, _ = _picks(nv.model(0))
        with pytest.raises(migpool.InUseError) as e:
            reconcile.plan_apply({two.name: 2}, nv)
        assert f"PID {p.pid} ({procs[p.pid].name})" in str(e.value)
        print(f"\n{e.value}")
    finally:
        p.kill()
        p.wait()
