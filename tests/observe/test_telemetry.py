"""Telemetry without a GPU: GPM through the fake pynvml, the sampler, top, the exporter, pool metrics."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import fake_pynvml
import pool_tasks as T
import pytest
import scripts
from prometheus_client.parser import text_string_to_metric_families

import migpool
from migpool import NvmlBackend, SimulatedBackend, plugins
from migpool.backend.simulated import SIMULATED_DRIVER
from migpool.observe.exporter import exposition, registry_for
from migpool.observe.telemetry import Sampler, sample
from migpool.reconcile import core as reconcile


def scrape_text(sampler, process_metrics=False, hostname_label="Hostname"):
    return exposition(registry_for(sampler, process_metrics, hostname_label)).decode()


def parsed(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_gpm_through_nvml_per_gpu_and_per_instance():
    sim = SimulatedBackend("H100-80GB,A100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim))
    assert nv.activity(0) is None  # the first sample opens the window
    sim.set_activity(0, sm_active=72.5, tensor_active=40, dram_active=12.5)
    a = nv.activity(0)
    assert (a.sm_active, a.tensor_active, a.dram_active, a.sm_occupancy) == (72.5, 40, 12.5, 0.0)
    with pytest.raises(migpool.NotSupportedError, match="has no GPM"):
        nv.activity(1)  # Ampere
    reconcile.apply({"3g.40gb": 2}, nv, gpus=[0])
    gi = nv.mig_devices(0)[1].gi_id
    sim.set_activity(0, gi, sm_active=55.0)
    assert nv.activity(0, gi) is None and nv.activity(0, gi).sm_active == 55.0
    assert len(nv.nvml.gpm_samples) == 2  # one open sample per (GPU, instance): the older ones were freed
    nv.close()
    assert nv.nvml.gpm_samples == {}


def test_sampler_snapshot_has_partitions_processes_and_reasons():
    sim = SimulatedBackend("H100-80GB,A100-80GB")
    reconcile.apply({"3g.40gb": 1, "1g.10gb": 2}, sim, gpus=[0])
    devs = sim.mig_devices(0)
    sim.register_process(0, os.getpid(), "python", devs[0].uuid, 1130)
    sim.register_process(1, os.getpid(), "python", None, 2048)
    sim.set_activity(0, devs[0].gi_id, sm_active=96.3, sm_occupancy=14.2)
    snap = sample(sim)
    g0, g1 = snap.gpus
    p = next(p for p in g0.partitions if p.uuid == devs[0].uuid)
    assert p.activity.sm_active == 96.3 and p.memory_used_mib == 1130 and p.profile == "3g.40gb"
    assert [(x.pid, x.name, x.memory_mib) for x in p.processes] == [(os.getpid(), "python", 1130)]
    assert p.processes[0].user not in ("", "?")
    assert g0.activity is None and "per partition" in g0.activity_note
    assert g1.activity is None and "has no GPM" in g1.activity_note and g1.memory_used_mib == 2048


def test_exporter_uses_dcgm_names_and_parses():
    sim = SimulatedBackend("H100-80GB")
    reconcile.apply({"3g.40gb": 1, "1g.10gb": 3}, sim)
    d = sim.mig_devices(0)[0]
    sim.register_process(0, os.getpid(), "python", d.uuid, 1000)
    sim.set_activity(0, d.gi_id, sm_active=50.0, tensor_active=25.0)
    with Sampler(sim, interval=0.05) as s:
        values = parsed(scrape_text(s))
    labels = dict(
        gpu="0",
        UUID=sim.gpus()[0].uuid,
        pci_bus_id=sim.gpus()[0].pci_bus_id,
        device="nvidia0",
        modelName="NVIDIA H100 80GB HBM3",
        Hostname=socket.gethostname(),
        GPU_I_PROFILE=d.profile_name,
        GPU_I_ID=str(d.gi_id),
        DCGM_FI_DRIVER_VERSION=SIMULATED_DRIVER,
    )
    key = tuple(sorted(labels.items()))
    assert values[("DCGM_FI_DEV_FB_USED", key)] == 1000
    assert values[("DCGM_FI_DEV_FB_FREE", key)] == d.memory_mib - 1000
    assert values[("DCGM_FI_PROF_SM_ACTIVE", key)] == 0.5 and values[("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", key)] == 0.25
    device = tuple(sorted({**labels, "CI_ID": str(d.ci_id), "placement": str(d.placement), "MIG_UUID": d.uuid}.items()))
    assert values[("migpool_partition_processes", device)] == 1
    info = [k for k in values if k[0] == "migpool_partition_info"]
    assert len(info) == 4 and all(values[k] == 1 for k in info)
    assert not [k for k in values if k[0] == "migpool_process_fb_used"]  # who runs what: only when asked


def test_per_process_series_are_opt_in_and_name_the_process():
    sim = SimulatedBackend("H100-80GB")
    reconcile.apply({"3g.40gb": 1}, sim)
    d = sim.mig_devices(0)[0]
    sim.register_process(0, os.getpid(), "python", d.uuid, 1000)
    with Sampler(sim, interval=0.05) as s:
        without, with_them = parsed(scrape_text(s)), parsed(scrape_text(s, process_metrics=True))
    assert not [k for k in without if k[0] == "migpool_process_fb_used"]
    (key,) = [k for k in with_them if k[0] == "migpool_process_fb_used"]
    assert with_them[key] == 1000 and dict(key[1])["pid"] == str(os.getpid()) and dict(key[1])["name"] == "python"


def test_a_scrape_of_8_gpus_by_7_partitions_reads_no_gpu():
    sim = SimulatedBackend("A100-80GB:8")
    reconcile.apply({"1g.10gb": 7}, sim)
    with Sampler(sim, interval=60) as s:
        before = sim.operations()
        text = scrape_text(s)
        assert sim.operations() == before
    assert text.count("migpool_partition_info{") == 56


def test_pool_stats_and_metrics_port():
    port = _free_port()
    os.environ["MIGPOOL_SIMULATE"] = "H100-80GB"
    try:
        with migpool.Compute(
            worker=migpool.Worker(),
            plugins=[plugins.mig(profile="3g.40gb", count="all")],
            metrics_port=port,
            progress=False,
            retries=0,
        ) as c:
            migpool.gather(*[T.add(i) for i in range(6)]) >> c
            with pytest.raises(T.Boom):
                T.fail("x") >> c
            assert any("Boom: x" in (w["last_error"] or "") for w in c.stats()["workers"])
            with pytest.raises(migpool.WorkerLostError):
                T.crash() >> c
            stats = c.stats()
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        del os.environ["MIGPOOL_SIMULATE"]
    ws = stats["workers"]
    assert len(ws) == 2 and sum(w["tasks_done"] for w in ws) == 6
    assert sum(w["tasks_failed"] for w in ws) == 1 and sum(w["tasks_lost"] for w in ws) == 1
    assert all(w["partition"].startswith("MIG-") and w["profile"] == "3g.40gb" for w in ws)
    assert any("exited with code 3" in (w["last_error"] or "") for w in ws)
    values = parsed(text)
    done = sum(v for (name, _), v in values.items() if name == "migpool_tasks_finished_total")
    assert done == 6
    count = sum(v for (name, _), v in values.items() if name == "migpool_task_duration_seconds_count")
    assert count == 8  # every ending, including the failed and the lost task
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)  # stopped with the pool


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mp(*args, **kw):
    env = {**os.environ, "COLUMNS": "80", **kw.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-m", "migpool", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=kw.pop("timeout", 60),
        **kw,
    )


def test_top_once_json_and_table():
    sim = SimulatedBackend("H200")
    reconcile.apply({"3g.71gb": 2}, sim)
    d = sim.mig_devices(0)[0]
    sim.register_process(0, os.getpid(), "trainer", d.uuid, 4096)
    sim.set_activity(0, d.gi_id, sm_active=81.0)
    r = mp("top", "--once", "--json", "--simulate", "H200", "--interval", "0.1")
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    part = next(p for p in snap["gpus"][0]["partitions"] if p["uuid"] == d.uuid)
    assert part["activity"]["sm_active"] == 81.0 and part["processes"][0]["memory_mib"] == 4096
    r = mp("top", "--once", "--simulate", "H200", "--interval", "0.1")
    assert r.returncode == 0 and all(len(line) <= 80 for line in r.stdout.splitlines())
    assert "81" in r.stdout and "trainer" in r.stdout and f"{d.gi_id}:3g.71gb" in r.stdout and "4096 MiB" in r.stdout


def test_top_shows_a_running_pool():
    code = (
        "import time, migpool as sky, pool_tasks as T\n"
        "with sky.Compute(provider=sky.Local(simulate='A100-80GB'),"
        " plugins=[sky.plugins.mig(profile='3g.40gb', count='all')],"
        " progress=False) as c:\n"
        "    T.add(1) >> c\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(30)\n"
    )
    proc = scripts.start(code, "ready")
    try:
        deadline = time.time() + 10
        while True:  # a pool publishes its stats once a second
            r = mp("top", "--once", "--json", "--simulate", "A100-80GB", "--interval", "0.1")
            pools = json.loads(r.stdout)["pools"]
            assert [p["pid"] for p in pools] == [proc.pid] and len(pools[0]["workers"]) == 2
            if sum(w["tasks_done"] for w in pools[0]["workers"]) == 1:
                break
            assert time.time() < deadline
            time.sleep(0.2)
        table = mp("top", "--once", "--simulate", "A100-80GB", "--interval", "0.1").stdout
        assert f"pool (pid {proc.pid})" in table and "3g.40gb" in table
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "args,msg",
    [
        (["top", "--interval", "0"], "positive number of seconds"),
        (["metrics", "--interval", "-1"], "positive number of seconds"),
        (["metrics", "--port", "0"], "between 1 and 65535"),
    ],
)
def test_bad_input_is_refused(args, msg):
    r = mp(*args, "--simulate", "A100-80GB")
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_metrics_port_in_use_and_no_gpu():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        r = mp("metrics", "--port", str(port), "--simulate", "A100-80GB")
    assert r.returncode == 2 and f"port {port} is already in use" in r.stderr and "Traceback" not in r.stderr
    env = {k: v for k, v in os.environ.items() if k != "MIGPOOL_SIMULATE"}
    r = subprocess.run([sys.executable, "-m", "migpool", "top", "--once"], capture_output=True, text=True, env=env)
    if r.returncode == 0:
        pytest.skip("this machine has an NVIDIA GPU")
    assert r.returncode == 2 and "simulate" in r.stderr and "Traceback" not in r.stderr


def test_metrics_command_serves_until_stopped():
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migpool",
            "metrics",
            "--port",
            str(port),
            "--addr",
            "127.0.0.1",
            "--simulate",
            "H100-80GB",
            "--interval",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "serving metrics on" in proc.stderr.readline()
        deadline = time.time() + 20
        while True:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                assert time.time() < deadline
                time.sleep(0.1)
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"DCGM_FI_DEV_FB_USED", "DCGM_FI_PROF_SM_ACTIVE", "migpool_sample_seconds"} <= names
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_live_top_refreshes_and_quits_on_q():
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "80", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "migpool", "top", "--simulate", "H100-80GB", "--interval", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.time() + 30
        while b"q: quit" not in seen and time.time() < deadline:
            seen += os.read(master, 65536)
        assert b"q: quit" in seen and b"GPU 0: NVIDIA H100 80GB HBM3" in seen
        os.write(master, b"q")
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        os.close(master)
