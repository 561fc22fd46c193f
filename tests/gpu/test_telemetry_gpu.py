"""Read-only telemetry on the real GPU (MIG mode left as it is): GPM activity under a matrix-multiply load in a
migpool worker, `migpool top --once --json`, and the Prometheus exporter's output."""

import json
import os
import subprocess
import sys
import time

import pool_tasks as T
import pytest
from prometheus_client.parser import text_string_to_metric_families

import migpool
from migpool import NvmlBackend
from migpool.backend.base import HEALTH_FIELDS
from migpool.observe.exporter import Scrapes
from migpool.observe.telemetry import Sampler

pytestmark = pytest.mark.gpu


def _top_json():
    env = dict(os.environ, MIGPOOL_READ_ONLY="1")
    env.pop("MIGPOOL_SIMULATE", None)
    r = subprocess.run(
        [sys.executable, "-m", "migpool", "top", "--once", "--json", "--interval", "0.5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _busy(nv, pid: int, timeout: float = 60.0) -> None:
    """Wait until process `pid` holds memory on GPU 0: its load has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.pid == pid and p.used_memory_mib > 256 for p in nv.processes(0)):
            return
        time.sleep(0.2)
    raise AssertionError(f"PID {pid} never showed on GPU 0")


def test_sampler_top_and_exporter_see_a_load_and_an_idle_gpu():
    """The load runs for 20 s. It is sampled only once it is surely running: its process holds memory on the GPU,
    its first kernels have ramped up (2 s), and the sampler's window that was open while that happened is
    discarded, so the window read lies wholly inside the load (one that straddled its start once read 49%)."""
    pytest.importorskip("torch")
    nv = NvmlBackend()
    if nv.gpus()[0].mig_current:
        pytest.skip("MIG is enabled on GPU 0: this test loads the whole GPU")
    with (
        Sampler(nv, interval=0.5) as sampler,
        migpool.Compute(
            worker=migpool.Worker(concurrency=1, executor="process"),
            plugins=[migpool.plugins.gpus([0])],
            progress=False,
        ) as pool,
    ):
        sampler.latest(wait=3)
        idle = sampler.latest(wait=3).gpus[0]
        pid = pool.submit(T.getpid).result(timeout=120)
        fut = pool.submit(T.matmul_for(20))
        _busy(nv, pid)
        time.sleep(2.0)
        sampler.latest(wait=3)  # (its window may reach back before the ramp)
        busy = sampler.latest(wait=3).gpus[0]
        top = _top_json()
        text = Scrapes(sampler).body().decode()
        result = fut.result(timeout=120)
        time.sleep(1.5)
        sampler.latest(wait=3)
        after = sampler.latest(wait=3).gpus[0]
    nv.close()
    print("\nGPM readings:", dict(idle=idle.activity, busy=busy.activity, after=after.activity))
    print("every device counter NVML gives, idle -> busy (bf16 matrix products):")
    for f in HEALTH_FIELDS:
        print(f"  {f:<28} {getattr(idle.health, f)!s:>14} -> {getattr(busy.health, f)!s:<14}")
    print("  not read:", dict(busy.health.missing) or "none")
    print(f"sampling pass of the GPU: {sampler.latest().sample_seconds * 1e3:.1f} ms")
    assert idle.activity is not None and busy.activity is not None, (idle.activity_note, busy.activity_note)
    assert busy.activity.sm_active > 80 and after.activity.sm_active < 10, (busy.activity, after.activity)
    assert busy.health.power_w > idle.health.power_w and busy.health.gpu_util > 80, (idle.health, busy.health)
    assert busy.health.energy_mj > idle.health.energy_mj and busy.health.sm_clock_mhz > 0
    load = [p for p in top["gpus"][0]["processes"] if p["pid"] == result["pid"]]
    assert load and load[0]["memory_mib"] > 256, top["gpus"][0]["processes"]
    print("top --once --json, the loading process:", load[0], "GPU activity:", top["gpus"][0]["activity"])
    values = {
        (s.name.removesuffix("_total") if s.name.startswith("DCGM_") else s.name, s.labels.get("gpu")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    print("exporter:", {k[0]: v for k, v in values.items() if k[1] == "0" and k[0].startswith("DCGM")})
    assert values[("DCGM_FI_PROF_SM_ACTIVE", "0")] > 0.8
    assert values[("DCGM_FI_DEV_FB_USED", "0")] >= load[0]["memory_mib"]
    for name in ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_UTIL"):
        assert (name, "0") in values, name
