"""Issue 46: every partition's series labelled with who holds it (`migpool metrics --holders`): the lease's
holder, the pool's task on it, the Slurm job from the holder's environment, the Kubernetes pod from the
kubelet's pod-resources socket; an unheld partition carries none, and a changed layout leaves no stale series."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import pool_tasks as T
import pytest
from prometheus_client.parser import text_string_to_metric_families

import migpool
from migpool import SimulatedBackend
from migpool.host.leases import Leases
from migpool.observe import holders, top
from migpool.observe.exporter import Scrapes, exposition, registry_for
from migpool.observe.telemetry import Sampler, sample, with_holders
from migpool.reconcile import core as reconcile


def _scrape(sim):
    with Sampler(sim, interval=0.05, holders=True) as s:
        s.latest(wait=2)
        text = Scrapes(s).body().decode()
        assert text == exposition(registry_for(s)).decode()  # the fast renderer writes what the library does
    return text


def _labels(text, name):
    return [s.labels for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name]


@pytest.fixture
def sim(monkeypatch, tmp_path):
    monkeypatch.setenv("MIGPOOL_STATE_DIR", str(tmp_path / "state"))
    sim = SimulatedBackend("A100-80GB")
    reconcile.apply({"3g.40gb": 1, "1g.10gb": 2}, sim)
    return sim


def test_a_leased_partition_is_labelled_with_its_holder_and_a_free_one_with_none(sim):
    held, free, _ = [d.uuid for d in sim.mig_devices(0)]
    leases = Leases(sim.state_dirs().leases(), command="trainer --epochs 3")
    leases.take(held)
    try:
        text = _scrape(sim)
    finally:
        leases.close()
    info = {s["MIG_UUID"]: s for s in _labels(text, "migpool_partition_info")}
    assert info[held]["holder_pid"] == str(os.getpid())
    assert info[held]["holder_command"] == "trainer --epochs 3"
    assert info[held]["holder_user"]
    assert info[free]["holder_pid"] == "" and info[free]["holder_command"] == ""
    gi = next(d.gi_id for d in sim.mig_devices(0) if d.uuid == held)
    used = {s["GPU_I_ID"]: s for s in _labels(text, "DCGM_FI_DEV_FB_USED")}
    assert used[str(gi)]["holder_pid"] == str(os.getpid())  # dcgm-exporter's series carry them too
    assert set(holders.LABELS) <= set(used[str(gi)])


def test_the_dashboards_holder_table_lists_the_held_partitions_with_their_labels(sim):
    dash = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/migpool-mig.json").read_text())
    (panel,) = [p for p in dash["panels"] if p["title"] == "Who is on each partition"]
    expr = panel["targets"][0]["expr"]
    name, matchers = re.fullmatch(r"(\w+)\{(.*)\}", expr).groups()
    assert 'holder_pid!=""' in matchers
    held = sim.mig_devices(0)[0].uuid
    leases = Leases(sim.state_dirs().leases())
    leases.take(held)
    try:
        rows = [lab for lab in _labels(_scrape(sim), name) if lab["holder_pid"] != ""]
    finally:
        leases.close()
    assert [r["MIG_UUID"] for r in rows] == [held]
    assert set(panel["transformations"][0]["options"]["indexByName"]) <= set(rows[0])  # every column it shows


def test_without_holders_the_series_keep_dcgm_exporters_labels(sim):
    with Sampler(sim, interval=0.05) as s:
        s.latest(wait=2)
        text = Scrapes(s).body().decode()
    assert "holder_pid" not in text


def test_the_slurm_job_comes_from_the_holders_environment(sim, tmp_path):
    uuid = sim.mig_devices(0)[1].uuid
    ready = tmp_path / "ready"
    code = (
        "import sys, time, pathlib; from migpool.host.leases import Leases\n"
        f"l = Leases(pathlib.Path({str(sim.state_dirs().leases())!r})); l.take({uuid!r})\n"
        f"pathlib.Path({str(ready)!r}).write_text('1'); time.sleep(60)\n"
    )
    env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_STEP_ID="3")
    p = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        found = with_holders(sim, sample(sim)).holders
    finally:
        p.kill()
        p.wait()
    assert found is not None
    assert (found[uuid].pid, found[uuid].slurm_job_id, found[uuid].slurm_step_id) == (p.pid, "4242", "3")


def test_a_pools_task_is_named_on_its_partition(monkeypatch, tmp_path):
    monkeypatch.setenv("MIGPOOL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    sim = SimulatedBackend("A100-80GB")
    from migpool.observe.poolstats import running_pools

    with migpool.Compute(
        worker=migpool.Worker(executor="process"),
        plugins=[migpool.plugins.mig(profile="3g.40gb")],
        progress=False,
        name="trainer",
    ) as pool:
        fut = pool.submit(T.nap(3.0))
        deadline = time.monotonic() + 20
        found: dict[str, holders.Holder] = {}
        while time.monotonic() < deadline and not any(h.task for h in found.values()):
            found = with_holders(sim, sample(sim, list(running_pools()))).holders or {}
            time.sleep(0.1)
        fut.result(timeout=30)
        mine = {p.uuid for p in pool.partitions}
    (uuid,) = [u for u, h in found.items() if h.task]
    assert found[uuid].task == "nap" and found[uuid].pid == os.getpid() and uuid in mine
    assert found[uuid].pool == "trainer"


def test_top_shows_who_holds_each_partition(sim):
    uuid = sim.mig_devices(0)[0].uuid
    leases = Leases(sim.state_dirs().leases(), command="serve.py")
    leases.take(uuid)
    try:
        snap = with_holders(sim, sample(sim))
    finally:
        leases.close()
    from rich.console import Console

    console = Console(width=80, record=True)
    console.print(top.render(snap))
    text = console.export_text()
    assert f"PID {os.getpid()}" in text and "serve.py" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_changed_layout_leaves_no_stale_series(sim):
    """A scrape every 0.2 s while the layout changes under it: each scrape's partitions are the layout of a moment,
    and the last scrape has exactly the last layout (dcgm-exporter issue 714: partitions made later had none)."""
    stop = threading.Event()
    scraped: list[set[str]] = []

    with Sampler(sim, interval=0.05, holders=True) as s:
        s.latest(wait=2)
        scrapes = Scrapes(s)

        def scrape_loop():
            while not stop.is_set():
                text = scrapes.body().decode()
                scraped.append({lab["MIG_UUID"] for lab in _labels(text, "migpool_partition_info")})
                time.sleep(0.2)

        with futures.ThreadPoolExecutor(1) as ex:
            done = ex.submit(scrape_loop)
            layouts = [{"1g.10gb": 7}, {"7g.80gb": 1}, {"2g.20gb": 3}]
            seen_layouts = []
            for layout in layouts:
                reconcile.apply(layout, sim)
                seen_layouts.append({d.uuid for d in sim.mig_devices(0)})
                time.sleep(0.5)
            s.latest(wait=2)
            s.latest(wait=2)
            stop.set()
            done.result(timeout=10)
        final = {lab["MIG_UUID"] for lab in _labels(scrapes.body().decode(), "migpool_partition_info")}
    assert final == seen_layouts[-1]
    assert any(found == seen_layouts[0] for found in scraped)  # a partition made later appears in a scrape


def test_dynamic_migs_partitions_come_and_go_in_the_scrapes_with_their_holder(monkeypatch, tmp_path):
    """dcgm-exporter issue 714: partitions made while the exporter ran had no series. A scrape every 0.2 s while
    dynamic MIG makes a 1g.10gb, then a 7g.80gb in its place: each appears, held by the pool, in some scrape, and
    once the pool has closed (its partitions destroyed) the next scrape has none of them."""
    monkeypatch.setenv("MIGPOOL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    sim = SimulatedBackend("A100-80GB")
    seen: dict[tuple[str, str], str] = {}  # (profile, MIG UUID) -> the holder_pid it was scraped with
    stop = threading.Event()
    with Sampler(sim, interval=0.1, holders=True) as s:
        s.latest(wait=2)
        scrapes = Scrapes(s)

        def scrape_loop():
            while not stop.is_set():
                for lab in _labels(scrapes.body().decode(), "migpool_partition_info"):
                    if lab["holder_pid"]:
                        seen.setdefault((lab["GPU_I_PROFILE"], lab["MIG_UUID"]), lab["holder_pid"])
                time.sleep(0.2)

        with futures.ThreadPoolExecutor(1) as ex:
            loop = ex.submit(scrape_loop)
            with migpool.Compute(
                provider=migpool.Local(simulate="A100-80GB"),
                worker=migpool.Worker(executor="process"),
                plugins=[migpool.plugins.mig(dynamic=True, keep_idle=0.2)],
                progress=False,
            ) as pool:
                pool.submit(T.nap(1.5).on("1g.10gb")).result(timeout=60)
                pool.submit(T.nap(1.5).on("7g.80gb")).result(timeout=120)
                made = {ch["profile"] for ch in pool.changes if ch["action"] == "create"}
            s.latest(wait=2)
            s.latest(wait=2)
            stop.set()
            loop.result(timeout=10)
        after = {lab["MIG_UUID"] for lab in _labels(scrapes.body().decode(), "migpool_partition_info")}
    assert {"1g.10gb", "7g.80gb"} <= made
    held = {profile for (profile, _), pid in seen.items() if pid == str(os.getpid())}
    assert {"1g.10gb", "7g.80gb"} <= held, seen  # each scraped while it existed, held by this pool
    assert not after & {uuid for _, uuid in seen}  # and gone once destroyed: no stale series


# --- Kubernetes: the kubelet's pod-resources socket, answered by a stand-in gRPC server ---


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _list_response(pods: list[tuple[str, str, str, list[str]]]) -> bytes:
    out = b""
    for name, namespace, container, ids in pods:
        devices = _field(1, b"nvidia.com/mig-1g.10gb") + b"".join(_field(2, i.encode()) for i in ids)
        cont = _field(1, container.encode()) + _field(2, devices)
        out += _field(1, _field(1, name.encode()) + _field(2, namespace.encode()) + _field(3, cont))
    return out


def test_the_pod_comes_from_the_kubelets_pod_resources_socket(sim, tmp_path, monkeypatch):
    grpc = pytest.importorskip("grpc")
    uuid = sim.mig_devices(0)[2].uuid
    answer = _list_response([("trainer-0", "ml", "main", [uuid]), ("other", "default", "c", ["MIG-elsewhere"])])
    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister",
        {"List": grpc.unary_unary_rpc_method_handler(lambda req, ctx: answer)},  # bytes in, bytes out
    )
    server.add_generic_rpc_handlers((handler,))
    sock = tmp_path / "kubelet.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    try:
        monkeypatch.setenv(holders.POD_RESOURCES_ENV, str(sock))
        text = _scrape(sim)
    finally:
        server.stop(0)
    info = {s["MIG_UUID"]: s for s in _labels(text, "migpool_partition_info")}
    assert (info[uuid]["pod"], info[uuid]["namespace"], info[uuid]["container"]) == ("trainer-0", "ml", "main")
    others = [s for u, s in info.items() if u != uuid]
    assert others and all(s["pod"] == "" for s in others)


def test_no_socket_means_no_pod_and_no_note(tmp_path):
    assert holders.pod_devices(str(tmp_path / "absent.sock")) == ({}, None)
