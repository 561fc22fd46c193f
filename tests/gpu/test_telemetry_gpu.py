"""Read-only telemetry on the real GPU (MIG mode left as it is): GPM activity under a matrix-multiply load in a
migpool worker, `migpool top --once --json`, and the Prometheus exporter's output."""

import json
import os
import subprocess
import sys
import time

import pool_tasks as T
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import migpool
from migpool import NvmlBackend
from migpool.exporter import registry_for
from migpool.telemetry import Sampler

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


def test_sampler_top_and_exporter_see_a_load_and_an_idle_gpu():
    pytest.importorskip("torch")
    nv = NvmlBackend()
    if nv.gpus()[0].mig_current:
        pytest.skip("MIG is enabled on GPU 0: this test loads the whole GPU")
    readings = {}
    with (
        Sampler(nv, interval=0.5) as sampler,
        migpool.Compute(
            worker=migpool.Worker(concurrency=1, executor="process"),
            plugins=[migpool.plugins.gpus([0])],
            progress=False,
        ) as pool,
    ):
        idle = sampler.latest(wait=3).gpus[0]
        fut = pool.submit(T.matmul_for(12))
        time.sleep(4)  # past the ramp
        busy = sampler.latest(wait=3).gpus[0]
        top = _top_json()
        text = generate_latest(registry_for(sampler)).decode()
        result = fut.result(timeout=120)
        time.sleep(1.5)
        after = sampler.latest(wait=3).gpus[0]
    nv.close()
    readings = dict(
        idle=idle.activity, busy=busy.activity, after=after.activity, sample_s=sampler.latest().sample_seconds
    )
    print("\nGPM readings:", readings)
    assert idle.activity is not None and busy.activity is not None, (idle.activity_note, busy.activity_note)
    assert busy.activity.sm_active > 50 and after.activity.sm_active < 10, readings
    load = [p for p in top["gpus"][0]["processes"] if p["pid"] == result["pid"]]
    assert load and load[0]["memory_mib"] > 256, top["gpus"][0]["processes"]
    print("top --once --json, the loading process:", load[0], "GPU activity:", top["gpus"][0]["activity"])
    values = {
        (s.name, s.labels.get("gpu")): s.value for fam in text_string_to_metric_families(text) for s in fam.samples
    }
    print("exporter:", {k: v for k, v in values.items() if k[1] == "0" and k[0].startswith("DCGM")})
    assert values[("DCGM_FI_PROF_SM_ACTIVE", "0")] > 0.5
    assert values[("DCGM_FI_DEV_FB_USED", "0")] >= load[0]["memory_mib"]
