"""dcgm-exporter's default counters, names, types, labels and layout on MIG GPUs, from the simulator and through
the fake NVML (the real Prometheus and the dashboards: tests/observe/test_prometheus.py)."""

import socket

import dcgm_dashboard
import fake_pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from migpool import NvmlBackend, SimulatedBackend
from migpool.observe.exporter import Scrapes, exposition, registry_for
from migpool.observe.telemetry import Sampler, sample
from migpool.reconcile import core as reconcile


def scraped(backend, **kw):
    with Sampler(backend, interval=0.05) as s:
        s.latest(wait=2)
        s.latest(wait=2)  # a second sample: its activity window is open
        text = Scrapes(s, **kw).body().decode()
        assert text == exposition(registry_for(s, **kw)).decode()  # the fast renderer writes what the library does
    return text


def series(text):
    """Samples by name, as Prometheus stores them (the Python parser adds `_total` to a counter's samples that
    have none: Prometheus keeps them as written, as tests/observe/test_prometheus.py queries them)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name = s.name.removesuffix("_total") if s.name.startswith("DCGM_") else s.name
            out.setdefault(name, []).append((s.labels, s.value))
    return out


@pytest.fixture
def h100s():
    sim = SimulatedBackend("H100-80GB:2")
    reconcile.apply({"3g.40gb": 1, "1c.2g.20gb": 2, "1g.10gb": 1}, sim, gpus=[0])
    for d in sim.mig_devices(0):
        sim.set_activity(0, d.gi_id, sm_active=50.0, graphics_active=55.0, tensor_active=30.0, dram_active=10.0)
    sim.set_activity(1, None, sm_active=90.0, graphics_active=95.0, tensor_active=70.0, dram_active=40.0)
    return sim


def test_every_default_counter_that_nvml_gives_has_a_series(h100s):
    got = series(scraped(h100s))
    for name in dcgm_dashboard.DEFAULT_COUNTERS:
        assert (name in got) == (name not in dcgm_dashboard.NOT_FROM_NVML), name


def test_counters_keep_dcgm_exporters_names_and_types(h100s):
    text = scraped(h100s)
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" in text
    assert "\nDCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{" in text and "ENERGY_CONSUMPTION_total" not in text
    assert "# TYPE DCGM_FI_DEV_GPU_TEMP gauge" in text


def test_a_mig_gpu_is_its_gpu_instances_with_the_gpus_readings_on_each(h100s):
    """As dcgm-exporter lays them out: GPU 0 (MIG, three GPU instances, one holding two compute instances) has
    three series of each counter, one per GPU instance, each with the GPU's temperature; GPU 1 has one, unlabelled
    by GPU instance. Utilization, which NVML does not read with MIG enabled, only for GPU 1."""
    got = series(scraped(h100s))
    temps = [
        (labels["gpu"], labels["GPU_I_PROFILE"], labels["GPU_I_ID"], v) for labels, v in got["DCGM_FI_DEV_GPU_TEMP"]
    ]
    on0 = sorted(t[1] for t in temps if t[0] == "0")
    assert on0 == ["1g.10gb", "2g.20gb", "3g.40gb"]
    assert len({t[3] for t in temps if t[0] == "0"}) == 1
    assert [t[1:3] for t in temps if t[0] == "1"] == [("", "")]
    assert [labels["gpu"] for labels, _ in got["DCGM_FI_DEV_GPU_UTIL"]] == ["1"]
    fb = {(labels["gpu"], labels["GPU_I_PROFILE"]): v for labels, v in got["DCGM_FI_DEV_FB_FREE"]}
    assert fb[("0", "2g.20gb")] == h100s.model(0).profile("2g.20gb").memory_mib  # the GPU instance's own memory
    tensor = {(labels["gpu"], labels["GPU_I_PROFILE"]): v for labels, v in got["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"]}
    assert tensor[("0", "3g.40gb")] == 0.3 and tensor[("1", "")] == 0.7


def test_labels_are_dcgm_exporters(h100s):
    got = series(scraped(h100s))
    labels, _ = next(x for x in got["DCGM_FI_DEV_POWER_USAGE"] if x[0]["gpu"] == "1")
    g = h100s.gpus()[1]
    assert labels == {
        "gpu": "1",
        "UUID": g.uuid,
        "pci_bus_id": g.pci_bus_id,
        "device": "nvidia1",
        "modelName": "NVIDIA H100 80GB HBM3",
        "GPU_I_PROFILE": "",
        "GPU_I_ID": "",
        "Hostname": socket.gethostname(),
        "DCGM_FI_DRIVER_VERSION": h100s.driver_version(),
    }
    other = series(scraped(h100s, hostname_label="hostname"))
    assert {"hostname"} <= set(other["DCGM_FI_DEV_POWER_USAGE"][0][0]) and "Hostname" not in other[
        "DCGM_FI_DEV_POWER_USAGE"
    ][0][0]


def test_readings_follow_the_simulated_load_and_the_energy_counter_grows():
    sim = SimulatedBackend("H100-80GB")
    idle = sim.health(0)
    sim.set_activity(0, None, sm_active=100.0, graphics_active=100.0)
    busy = sim.health(0)
    assert busy.gpu_temp > idle.gpu_temp and busy.power_w > idle.power_w and busy.sm_clock_mhz > idle.sm_clock_mhz
    later = sim.health(0)
    assert later.energy_mj > busy.energy_mj


def test_xid_errors_as_dcgm_exporter_labels_them(h100s):
    h100s.inject_xid(1, 79)
    got = series(scraped(h100s))
    by_gpu = {labels["gpu"]: (labels["err_code"], labels["err_msg"], v) for labels, v in got["DCGM_FI_DEV_XID_ERRORS"]}
    assert by_gpu["1"] == ("79", "GPU has fallen off the bus", 79.0)
    assert by_gpu["0"] == ("0", "No Error", 0.0)


def test_a100_profiling_fields_are_absent_and_the_help_says_why():
    sim = SimulatedBackend("A100-80GB")
    text = scraped(sim)
    got = series(text)
    assert "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE" not in got and "DCGM_FI_DEV_GPU_TEMP" in got
    help_line = next(line for line in text.splitlines() if line.startswith("# HELP DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"))
    assert "A100: needs DCGM's profiling module" in help_line and "GPU 0: NVIDIA A100-SXM4-80GB has no GPM" in help_line


def test_the_same_series_through_nvml(h100s):
    """NvmlBackend reads the counters through NVML's calls (the fake pynvml answers from the simulator with NVML's
    types and codes): the same names, labels and readings as the simulator gives directly."""
    nv = NvmlBackend(nvml=fake_pynvml.make(h100s))
    direct = sample(h100s)
    through = sample(nv)
    for a, b in zip(direct.gpus, through.gpus, strict=True):
        assert (a.pci_bus_id, a.mig_mode) == (b.pci_bus_id, b.mig_mode)
        assert a.health.gpu_temp == b.health.gpu_temp and a.health.sm_clock_mhz == b.health.sm_clock_mhz
        assert a.health.fb_reserved_mib == b.health.fb_reserved_mib
        assert {f for f, _ in a.health.missing} == {f for f, _ in b.health.missing}
    assert [f for f, _ in through.gpus[0].health.missing] == ["gpu_util", "mem_copy_util", "enc_util", "dec_util"]
    assert through.driver == h100s.driver_version()
    h100s.inject_xid(0, 31)
    assert nv.xid_events() == [(0, 31)]


def test_top_shows_the_readings_and_why_some_are_missing(h100s):
    from io import StringIO

    from rich.console import Console

    from migpool.observe.top import render

    out = StringIO()
    Console(file=out, width=80).print(render(sample(h100s)))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "°C" in text and " W" in text and "MHz" in text
    assert "util n/a: not reported while MIG is enabled" in " ".join(text.split())
    assert "5.0:1c.2g.20gb" in text and "5.1:1c.2g.20gb" in text  # the compute instances of one GPU instance


def test_pcie_rates_come_from_the_drivers_byte_counters_without_blocking(h100s):
    """nvmlDeviceGetPcieThroughput blocks 20 ms per direction (40 of 46 ms of a sampling pass on an H200): where
    the driver counts PCIe bytes, the rate is taken from those counters between two readings instead."""
    import time

    nv = NvmlBackend(nvml=fake_pynvml.make(h100s))
    first = nv.health(1)
    time.sleep(0.2)
    second = nv.health(1)
    assert first.pcie_tx_bytes == 0.0
    assert second.pcie_tx_bytes == pytest.approx(h100s.health(1).pcie_tx_bytes, rel=0.2)
    assert "nvmlDeviceGetPcieThroughput" not in nv.nvml.calls


def test_without_byte_counters_pcie_rates_come_from_nvmls_throughput_call(h100s):
    fake = fake_pynvml.make(h100s)
    del fake.NVML_FI_DEV_PCIE_COUNT_TX_BYTES  # (a driver or library older than the counters)
    nv = NvmlBackend(nvml=fake)
    assert nv.health(1).pcie_tx_bytes == pytest.approx(h100s.health(1).pcie_tx_bytes, rel=0.01)
    assert "nvmlDeviceGetPcieThroughput" in fake.calls
