"""Issue 47: warm spares (pool/scheduler/spares.py, pool/worker/spares.py). A spare is a worker process started
before its partition is known, with the pool's preload modules imported; it is handed its partition's environment
at the last moment. Each test here failed before spares existed (a new worker paid the import; stats had no
"spares"). Every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import migpool
from migpool import Compute, SimulatedBackend, Worker, plugins
from migpool.host import containment
from migpool.host.proc import pid_alive, wait_gone
from migpool.pool.scheduler.spares import MAX_MIB_ENV, SPARES_ENV

SLOW_S = 2.0  # how long the test module takes to import in a pool's process (a spare's or a worker's)

SLOW_MODULE = f"""
import os, time
IN_POOL = "MIGPOOL_NODE_INDEX" in os.environ  # (a pool's process: the test's own import stays quick)
if IN_POOL:
    time.sleep({SLOW_S})
IMPORTED_AT = time.time()

def where(x):
    return x, os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid(), IMPORTED_AT

def lease():
    fd, _, uuid = os.environ.get("MIGPOOL_LEASE_FD", "").partition(":")
    return uuid, os.readlink(f"/proc/self/fd/{{fd}}") if fd else None

def pid(x=None):
    return os.getpid()
"""


@pytest.fixture
def slow(tmp_path, monkeypatch):
    """A module that takes SLOW_S to import in the pool's processes, importable there (the pool passes the
    parent's own import paths on)."""
    name = f"slow_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module(name)


def _parked(c: Compute, n: int = 1, timeout: float = 30.0) -> list[dict]:
    """The pool's spares, once `n` of them have done their imports and wait."""
    deadline = time.monotonic() + timeout
    while True:
        idle = [s for s in c.stats()["spares"]["idle"] if s["parked"]]
        if len(idle) >= n:
            return idle
        assert time.monotonic() < deadline, f"no {n} parked spares after {timeout} s: {c.stats()['spares']}"
        time.sleep(0.05)


def _dynamic(slow_name: str, **kw) -> Compute:
    return Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        worker=Worker(executor="process", preload=(slow_name,), **kw),
        plugins=[plugins.mig(dynamic=True, gpus="all", keep_idle=30.0)],
        progress=False,
    )


def test_a_new_dynamic_partition_starts_its_task_on_a_spare_without_paying_the_import(slow):
    with _dynamic(slow.__name__) as c:
        spare = _parked(c)[0]
        assert c.partitions == []  # no partition yet: the spare was started without one
        t0 = time.time()
        x, cvd, pid, imported_at = migpool.function(slow.where)(7).on("1g.10gb") >> c
        took = time.time() - t0
        uuid = c.partitions[0].uuid
        leased, held = migpool.function(slow.lease)().on("1g.10gb") >> c
        big = migpool.function(len)(b"x" * (2 << 20)).on("1g.10gb") >> c  # (its segment's descriptor travels
        stats = c.stats()["spares"]
    assert x == 7 and pid == spare["pid"]
    assert cvd == uuid  # its partition, handed over at the last moment
    assert imported_at < t0  # the module was imported before the partition was asked for
    assert leased == uuid and held.endswith(f"{uuid}.lease")  # its lease came with it, open in the worker
    assert big == 2 << 20  # ... on the Unix socket beside the channel, which the handoff used too)
    assert took < SLOW_S / 2, f"submit -> result took {took:.2f} s with a warm spare"
    assert stats["used"] == 1 and stats["started"] >= 1


def test_a_spare_has_no_partition_and_no_device_open_before_it_is_given_one(slow, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-of-the-parent")  # what a spare must not inherit
    with _dynamic(slow.__name__) as c:
        pid = _parked(c)[0]["pid"]
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        sim = SimulatedBackend("A100-80GB")
        on_gpu = {p.pid for p in sim.processes(0)}
        _, cvd, worker, _ = migpool.function(slow.where)(1).on("1g.10gb") >> c
        on_gpu_after = {p.pid for p in sim.processes(0)}
    assert "CUDA_VISIBLE_DEVICES" not in env and "MIGPOOL_PARTITION" not in env and env["MIGPOOL_SPARE"]
    assert fds and not [f for f in fds if f.startswith("/dev/nvidia")], fds
    assert pid not in on_gpu  # the (simulated) driver saw no process of the spare's
    assert worker == pid and cvd != "GPU-of-the-parent" and cvd.startswith("MIG-")
    assert pid in on_gpu_after  # ... until it became the partition's worker


def test_a_worker_killed_is_restarted_on_a_spare(slow, monkeypatch):
    monkeypatch.setenv(SPARES_ENV, "1")
    with Compute(worker=Worker(concurrency=1, executor="process", preload=(slow.__name__,)), progress=False) as c:
        first = migpool.function(slow.pid)() >> c
        spare = _parked(c)[0]["pid"]
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        deadline = t0 + 20
        while c.worker_pids == [first] or c.worker_pids == [0]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        again = migpool.function(slow.pid)() >> c
        took = time.monotonic() - t0
        stats = c.stats()["spares"]
    assert again == spare != first
    assert took < SLOW_S / 2, f"kill -> the next task's result took {took:.2f} s"
    assert stats["used"] == 1


def test_stats_show_the_spares_and_their_memory(slow, monkeypatch):
    monkeypatch.setenv(SPARES_ENV, "2")
    with Compute(worker=Worker(concurrency=1, executor="process", preload=(slow.__name__,)), progress=False) as c:
        idle = _parked(c, 2)
        spares = c.stats()["spares"]
    assert spares["wanted"] == 2 and spares["preload"] == [slow.__name__] and spares["off"] is None
    assert len({s["pid"] for s in idle}) == 2
    assert all(s["rss_mib"] > 1 and s["import_s"] >= SLOW_S * 0.9 for s in idle)
    assert not [s for s in idle if pid_alive(s["pid"])]  # closed with the pool


def test_a_spare_over_its_memory_bound_is_ended_and_spares_turn_off(monkeypatch):
    monkeypatch.setenv(SPARES_ENV, "1")
    monkeypatch.setenv(MAX_MIB_ENV, "1")  # any interpreter holds more
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        deadline = time.monotonic() + 20
        while (spares := c.stats()["spares"])["off"] is None:
            assert time.monotonic() < deadline, spares
            time.sleep(0.05)
        started = spares["started"]
        time.sleep(0.3)
        spares = c.stats()["spares"]
    assert "over the bound of 1 MiB" in spares["off"] and spares["idle"] == [] and spares["started"] == started


def test_one_task_workers_take_spares(monkeypatch):
    with Compute(worker=Worker(concurrency=1, executor="process", reuse_processes=False), progress=False) as c:
        pids = [migpool.function(os.getpid)() >> c for _ in range(3)]
        spares = c.stats()["spares"]
    assert len(set(pids)) == 3 and spares["wanted"] == 1  # (a spare by default where each task needs a process)
    assert spares["used"] >= 1


def test_a_pool_without_a_reason_for_spares_keeps_none():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        assert "spares" not in c.stats()


POOL_THEN_WAIT = """
import os, sys, time
os.environ["MIGPOOL_SPARES"] = "2"
from migpool import Compute, Worker
with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as pool:
    deadline = time.monotonic() + 30
    while len([s for s in pool.stats()["spares"]["idle"] if s["parked"]]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    print(" ".join(str(s["pid"]) for s in pool.stats()["spares"]["idle"]), flush=True)
    time.sleep(600)
"""


@pytest.fixture(params=["cgroup", "sweep"])
def container_kind(request, monkeypatch):
    if request.param == "cgroup" and containment.kind() != "cgroup":
        pytest.skip("no writable cgroup v2 here: only the sweep kind runs")
    if request.param == "sweep":
        monkeypatch.setenv(containment.CGROUP_ENV, "0")
    return request.param


def test_spares_die_with_a_pool_killed_with_sigkill(container_kind):
    """The kernel tells each spare that the thread which started it is gone (PR_SET_PDEATHSIG), as it tells the
    workers: none outlives a pool killed with SIGKILL."""
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(POOL_THEN_WAIT)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        parent.kill()
        parent.wait(10)
        assert wait_gone(pids, 5) == [], "a spare outlived the pool"
    finally:
        parent.kill()
        parent.wait(10)
        base = containment.own_cgroup()  # (a container whose maker was killed is left empty: removed here)
        for d in base.glob(f"migpool-{parent.pid}-*") if base is not None else []:
            with contextlib.suppress(OSError):
                d.rmdir()


GPU_MODULE = """
import os
DEVICE = os.environ.get("SPARES_TEST_DEVICE", "")
HELD = open(DEVICE) if DEVICE and "MIGPOOL_NODE_INDEX" in os.environ else None  # as a CUDA init at import would

def pid(x=None):
    return os.getpid()
"""


def test_a_tasks_module_that_opens_the_gpu_at_import_is_not_preloaded_again(tmp_path, monkeypatch):
    """Review: spares import the modules of the tasks they saw, before their partition is known; one that opens a
    GPU device at import (a model moved to the GPU at module level) would hold the wrong device. A spare says so,
    ends itself, and the pool stops preloading what it learned from tasks; the task runs on a fresh worker."""
    device = Path(f"/dev/nvidia-migpool-test-{os.getpid()}")  # (its name is what a real device's starts with)
    try:
        device.write_text("")
    except OSError:
        pytest.skip("cannot make a file under /dev here (not root)")
    try:
        name = f"gpu_at_import_{os.getpid()}"
        (tmp_path / f"{name}.py").write_text(GPU_MODULE)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setenv("SPARES_TEST_DEVICE", str(device))
        import importlib

        mod = importlib.import_module(name)
        fn = migpool.function(mod.pid)
        with Compute(
            provider=migpool.Local(simulate="A100-80GB"),
            worker=Worker(executor="process"),
            plugins=[plugins.mig(dynamic=True, gpus="all", keep_idle=30.0)],
            progress=False,
        ) as c:
            fn().on("1g.10gb") >> c  # (learned: the next spare imports the module, and opens the "device")
            deadline = time.monotonic() + 60
            while not c.stats()["spares"]["notes"] and time.monotonic() < deadline:
                assert fn().on("2g.20gb") >> c  # a new partition takes a spare (which reports, and ends)
                fn().on("3g.40gb") >> c
                time.sleep(0.2)
            spares = c.stats()["spares"]
        assert spares["notes"] and "opened a GPU device" in spares["notes"][0]
        assert name not in spares["preload"]
    finally:
        device.unlink(missing_ok=True)


def test_an_elastic_pool_scaling_up_starts_its_new_node_on_a_spare(slow):
    """Issue 47, "where it pays: elastic scale-up": a Local pool with Nodes(min < max) keeps a spare by default
    (before, it kept none, and the node a task started paid the import), and the node it adds takes it."""
    options = migpool.Options(autoscale_idle_timeout=60, autoscale_cooldown=0.0)
    worker = Worker(concurrency=1, executor="process", preload=(slow.__name__,))
    with Compute(worker=worker, nodes=migpool.Nodes(initial=0, min=0, max=1), options=options, progress=False) as c:
        spare = _parked(c)[0]["pid"]
        assert c.current_nodes() == 0
        t0 = time.monotonic()
        pid = migpool.function(slow.pid)() >> c  # sent at zero nodes: the pool scales up for it
        took = time.monotonic() - t0
        nodes, spares = c.current_nodes(), c.stats()["spares"]
    assert nodes == 1 and pid == spare and spares["used"] == 1
    assert took < SLOW_S / 2, f"submit -> result took {took:.2f} s on a node added with a warm spare"


BIG_MODULE = """
import os, threading, time
BLOB = []

def grow():
    if os.environ.get("SPARES_TEST_LATER") == "1":
        time.sleep(1.0)  # (the spare has parked: it grows while it waits)
    BLOB.append(b"x" * ({mib} << 20))  # (written, so resident)

if "MIGPOOL_NODE_INDEX" in os.environ:  # (a pool's process: the test's own import stays small)
    with open(os.environ["SPARES_TEST_PIDS"], "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    if os.environ.get("SPARES_TEST_LATER") == "1":
        threading.Thread(target=grow, daemon=True).start()
    else:
        grow()

def pid(x=None):
    return os.getpid()
"""


@pytest.mark.parametrize("when", ["at import", "while it waits"])
def test_a_spare_that_grows_past_the_bound_is_ended_without_stats_being_read(when, tmp_path, monkeypatch):
    """Issue 47, "a spare's memory is reported and bounded": the bound was checked only when top_up or stats()
    ran (the pool's stats file, written once a second for `migpool top`, ran it too), so a spare that grew past
    it lived on in a pool whose stats nobody read. Now a watcher (or the kernel, where the spare's cgroup has a
    memory controller) ends it, whether it grew in its imports or later, and stats() says why."""
    from migpool.observe.poolstats import Publisher

    monkeypatch.setattr(Publisher, "start", lambda self: None)  # (no stats file: stats() is not read at all)
    name = f"big_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(BIG_MODULE.format(mib=96))
    pids_file = tmp_path / "pids"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SPARES_TEST_PIDS", str(pids_file))
    monkeypatch.setenv("SPARES_TEST_LATER", "1" if when == "while it waits" else "0")
    monkeypatch.setenv(SPARES_ENV, "1")
    monkeypatch.setenv(MAX_MIB_ENV, "64")  # (a spare without the module holds about 17 MiB)
    with Compute(worker=Worker(concurrency=1, executor="process", preload=(name,)), progress=False) as c:
        deadline = time.monotonic() + 30
        while not pids_file.exists() or not pids_file.read_text().strip():
            assert time.monotonic() < deadline, "the spare never imported the module"
            time.sleep(0.05)
        spare = int(pids_file.read_text().split()[0])
        assert wait_gone([spare], 20) == [], "the spare over the bound still lives"  # (stats() not read)
        spares = c.stats()["spares"]
        watching = [t.name for t in threading.enumerate() if t.name == "migpool-spares"]
    assert "over the bound of 64 MiB" in spares["off"] and spares["idle"] == [] and spares["started"] == 1
    assert watching and not [t for t in threading.enumerate() if t.name == "migpool-spares"]  # joined at close


def _cgroup_of(pid: int) -> Path:
    base = Path(os.environ.get(containment.CGROUP_ENV) or containment.own_cgroup() or "/nonexistent")
    return next(d for d in base.glob("migpool-*-spare") if str(pid) in (d / "cgroup.procs").read_text().split())


def test_the_kernel_holds_a_spares_cgroup_to_the_bound_until_it_becomes_a_worker(slow, monkeypatch):
    """Where containers are cgroups with a memory controller, a spare's cgroup is limited to the bound (memory.max)
    and the limit is lifted when the spare becomes a worker, which keeps the cgroup."""
    probe = containment.Container.make("probe")
    able = probe.limit_memory(1 << 30)
    probe.end()
    if not able:
        pytest.skip("no cgroup with a memory controller here: the watcher alone holds the bound")
    monkeypatch.setenv(SPARES_ENV, "1")
    monkeypatch.setenv(MAX_MIB_ENV, "512")
    with Compute(worker=Worker(concurrency=1, executor="process", preload=(slow.__name__,)), progress=False) as c:
        first = migpool.function(slow.pid)() >> c
        spare = _parked(c)[0]["pid"]
        cgroup = _cgroup_of(spare)
        limit = (cgroup / "memory.max").read_text().strip()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while c.worker_pids in ([first], [0]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        again = migpool.function(slow.pid)() >> c
        lifted = (cgroup / "memory.max").read_text().strip()
    assert limit == str(512 << 20) and again == spare and lifted == "max"


@pytest.mark.parametrize("args", [[], ["--new-partition"]])
def test_the_gpu_benchmark_says_in_one_line_that_there_is_no_gpu(args):
    """benchmarks/gpu_startup.py (its "new partition -> first kernel" mode, and the others) on a machine without
    a CUDA GPU (none visible: CUDA_VISIBLE_DEVICES is empty, or torch is missing): one line, exit status 0."""
    bench = Path(__file__).parents[2] / "benchmarks" / "gpu_startup.py"
    src = str(Path(migpool.__file__).parents[1])
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, str(bench), *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("gpu_startup: nothing measured, no GPU here: ") and len(p.stdout.splitlines()) == 1


STAND_IN_TORCH = """
import os, time
if "MIGPOOL_NODE_INDEX" in os.environ:  # (a pool's process pays the import, as torch's 4 s)
    time.sleep(1.0)

class _Tensor:
    def add_(self, x):
        return self

def zeros(*shape, device=None):
    return _Tensor()

class cuda:
    device_count = staticmethod(lambda: 1)
    synchronize = staticmethod(lambda: None)
    init = staticmethod(lambda: None)
"""


def test_the_gpu_benchmarks_new_partition_mode_runs_its_course_on_a_simulated_gpu(tmp_path):
    """benchmarks/gpu_startup.py --new-partition, on a simulated GPU with a stand-in for torch that takes 1 s to
    import in a pool's processes: each run's worker is the spare exactly when spares are kept (the benchmark
    asserts it), and the warm p50 is below the fresh one."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(STAND_IN_TORCH)
    bench = Path(__file__).parents[2] / "benchmarks" / "gpu_startup.py"
    paths = [str(Path(migpool.__file__).parents[1]), str(tmp_path), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, MIGPOOL_SIMULATE="A100-80GB", PYTHONPATH=os.pathsep.join(paths))
    args = [sys.executable, str(bench), "--new-partition", "--runs", "2"]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {line[:14].strip(): line[14:].split() for line in p.stdout.splitlines()}
    warm, fresh = float(rows["warm spare"][0]), float(rows["fresh process"][0])
    assert "(GPU instance create modelled: 92 ms; GPU 0 by UUID, read-only; 2 runs each)" in p.stdout
    assert warm < fresh and fresh >= 1.0, p.stdout
