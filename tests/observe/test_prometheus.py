"""Through a real Prometheus (Debian's `prometheus`, which .ci/run installs): it scrapes a migpool pool's metrics
port on a simulated Hopper machine (GPU 0 with MIG partitions and a pool's workers on them, GPU 1 whole and busy),
and every panel of NVIDIA dcgm-exporter's own Grafana dashboard, and of migpool's, returns data, its variables
resolved with their own label_values queries as Grafana resolves them."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import dcgm_dashboard
import pool_tasks as T
import pytest

import migpool
from migpool import SimulatedBackend

PROMETHEUS = shutil.which("prometheus")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None and not os.environ.get("CI"), reason="needs Debian's prometheus (apt-get install prometheus)"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Prom:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict]:
        out = _get(f"{self.base}/api/v1/query?query={urllib.parse.quote(expr)}")
        assert out["status"] == "success", out
        return out["data"]["result"]

    def label_values(self, metric_selector: str, label: str) -> list[str]:
        """Grafana's label_values(metric, label): the label's values on the series of that selector."""
        q = urllib.parse.urlencode({"match[]": metric_selector})
        return _get(f"{self.base}/api/v1/label/{label}/values?{q}")["data"]

    def substitute(self, expr: str, values: dict[str, list[str]]) -> str:
        """A variable set to All, as Grafana writes a multi-value one into a regex matcher."""
        for name, vals in values.items():
            alternatives = "|".join(re.escape(v).replace("\\", "\\\\") for v in vals)  # (inside a PromQL string)
            expr = expr.replace(f"${name}", f"({alternatives})")
        return expr


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A pool with a metrics port on a simulated H100 ×2, scraped every second by a real Prometheus on loopback."""
    assert PROMETHEUS, "CI installs Debian's prometheus: it is missing"
    root = tmp_path_factory.mktemp("prom")
    os.environ["MIGPOOL_STATE_DIR"] = str(root / "state")
    os.environ["MIGPOOL_SIMULATE"] = "H100-80GB:2"
    metrics_port, web = _port(), _port()
    sim = SimulatedBackend("H100-80GB:2")
    pool = migpool.Compute(
        provider=migpool.Local(),
        worker=migpool.Worker(executor="process"),
        plugins=[migpool.plugins.mig(layout={"3g.40gb": 1, "1c.2g.20gb": 2, "1g.10gb": 1}, restore=True)],
        metrics_port=metrics_port,
        progress=False,
    )
    pool.__enter__()
    proc = None
    try:
        gis = {d.gi_id for d in sim.mig_devices(0)}
        for gi in gis:
            sim.set_activity(0, gi, sm_active=60.0, tensor_active=40.0, graphics_active=65.0, dram_active=20.0)
        sim.set_activity(1, None, sm_active=90.0, tensor_active=80.0, graphics_active=95.0, dram_active=35.0)
        sim.inject_xid(1, 48)
        for _ in range(3):
            migpool.gather(*[T.nap(0.05) for _ in range(8)]) >> pool  # tasks on each partition
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: migpool\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        )
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{web}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "prometheus.log", "w"),
        )
        prom = Prom(f"http://127.0.0.1:{web}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if prom.query('count(up{job="migpool"} == 1)') and prom.query(
                    "count_over_time(migpool_tasks_finished_total[1m]) > 2"
                ):
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {(root / 'prometheus.log').read_text()[-2000:]}")
            migpool.gather(*[T.nap(0.05) for _ in range(4)]) >> pool
            time.sleep(0.5)
        else:
            pytest.fail(f"prometheus never scraped the pool: {(root / 'prometheus.log').read_text()[-2000:]}")
        yield prom, sim
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pool.__exit__(None, None, None)
        os.environ.pop("MIGPOOL_SIMULATE", None)


def test_dcgm_exporters_dashboard_has_data_in_every_panel(prometheus):
    prom, _ = prometheus
    values = {name: prom.label_values(metric, label) for name, (metric, label) in dcgm_dashboard.VARIABLES.items()}
    assert values["gpu"] == ["0", "1"] and len(values["instance"]) == 1, values
    for title, expr in dcgm_dashboard.PANELS.items():
        got = prom.query(prom.substitute(expr, values))
        assert got, f"panel {title!r} has no data: {expr}"
    # GPU 0 has MIG enabled: as from dcgm-exporter, one series per GPU instance, no whole-GPU one ...
    temps = prom.query('DCGM_FI_DEV_GPU_TEMP{gpu="0"}')
    assert len(temps) == 3 and all(t["metric"]["GPU_I_ID"] for t in temps)  # 3g.40gb, 2g.20gb (2 CIs), 1g.10gb
    assert len({t["value"][1] for t in temps}) == 1  # ... each carrying the GPU's own reading
    # ... and the utilization DCGM cannot read with MIG: only GPU 1's
    assert [u["metric"]["gpu"] for u in prom.query("DCGM_FI_DEV_GPU_UTIL")] == ["1"]


def test_every_default_counter_nvml_gives_is_scraped_with_dcgm_exporters_labels(prometheus):
    prom, sim = prometheus
    for name in dcgm_dashboard.DEFAULT_COUNTERS:
        got = prom.query(name)
        if name in dcgm_dashboard.NOT_FROM_NVML:
            assert not got, name
            continue
        assert got, f"{name}: no series"
    labels = prom.query('DCGM_FI_DEV_FB_USED{gpu="1"}')[0]["metric"]
    g = sim.gpus()[1]
    assert {k: labels[k] for k in ("gpu", "UUID", "pci_bus_id", "device", "modelName")} == {
        "gpu": "1",
        "UUID": g.uuid,
        "pci_bus_id": g.pci_bus_id,
        "device": "nvidia1",
        "modelName": "NVIDIA H100 80GB HBM3",
    }
    assert labels["Hostname"] == socket.gethostname() and labels["DCGM_FI_DRIVER_VERSION"] == sim.driver_version()
    (xid,) = prom.query('DCGM_FI_DEV_XID_ERRORS{gpu="1"}')
    assert xid["value"][1] == "48" and xid["metric"]["err_msg"] == "Double Bit ECC Error"
    energy = prom.query("rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[30s])")
    assert energy and all(float(e["value"][1]) > 0 for e in energy)  # a counter that grows with the power drawn


def test_migpools_own_dashboard_has_data_in_every_panel(prometheus):
    prom, _ = prometheus
    dash = json.loads((ROOT / "deploy" / "grafana" / "migpool-mig.json").read_text())
    variables = {}
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", v["query"])
        assert m, v["query"]
        selector = prom.substitute(m.group(1), variables)
        variables[v["name"]] = prom.label_values(selector, m.group(2))
        assert variables[v["name"]], v["name"]
    for panel in dash["panels"]:
        for target in panel["targets"]:
            if 'holder_pid!=""' in target["expr"]:  # a pool's own port has no holder labels: test_holders.py
                continue
            got = prom.query(prom.substitute(target["expr"], variables))
            assert got, f"panel {panel['title']!r} has no data: {target['expr']}"
    layout = prom.query(prom.substitute(dash["panels"][0]["targets"][0]["expr"], variables))
    assert sorted((r["metric"]["GPU_I_PROFILE"], r["metric"]["CI_ID"]) for r in layout) == [
        ("1g.10gb", "0"),
        ("2g.20gb", "0"),
        ("2g.20gb", "1"),
        ("3g.40gb", "0"),
    ]
