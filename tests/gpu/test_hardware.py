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
from migpool import NvmlBackend, reconcile
from migpool.catalog import find_by_nvml_name, format_placements
from migpool.hardware import compare_with_catalog

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


def test_cli_reads_and_plans_on_the_real_gpu(nv):
    gpus = json.loads(mp("gpus", "--json").stdout)
    assert gpus[0]["uuid"] == nv.gpus()[0].uuid
    prof = json.loads(mp("profiles", "--json").stdout)[0]["profiles"]
    assert {p["name"]: p["placements"] for p in prof} == {
        p.name: format_placements(p.placements) for p in nv.model(0).profiles
    }
    plan = mp("plan", "3g.40gb", "-n", "2")
    assert plan.returncode == 0, plan.stderr
    assert "create   3g.40gb      ■■■■····  0:4" in plan.stdout and "····■■■■  4:4" in plan.stdout
    mixed = mp("plan", "3g.40gb:1,1g.10gb:3", "--json")
    assert mixed.returncode == 0, mixed.stderr
    assert sorted(json.loads(mixed.stdout)["gpus"][0]["create"]) == [
        "1g.10gb@4:1",
        "1g.10gb@5:1",
        "1g.10gb@6:1",
        "3g.40gb@0:4",
    ]
    print(plan.stdout)


def test_apply_refuses_before_any_change_in_read_only_mode(nv):
    before = nv.gpus()[0]
    r = mp("apply", "3g.40gb", "-n", "2")
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
        with pytest.raises(migpool.InUseError) as e:
            reconcile.plan_apply({"3g.40gb": 2}, nv)
        assert f"PID {p.pid} ({procs[p.pid].name})" in str(e.value)
        print(f"\n{e.value}")
    finally:
        p.kill()
        p.wait()
