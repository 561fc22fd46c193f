import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import types
import zipfile
from concurrent.futures import Future
from pathlib import Path

import pool_tasks as T
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migpool
from migpool import Compute, Image, Local, Worker, gather, plugins
from migpool.host.proc import pid_alive


def mig_pool(spec="A100-80GB", n=2, **mig):
    mig.setdefault("profile", "3g.40gb")
    return Compute(
        provider=Local(simulate=spec),
        worker=Worker(concurrency=n, executor="process"),
        plugins=[plugins.mig(**mig)],
        progress=False,
    )


def test_reference_workflow_pins_each_worker_to_its_partition():
    with mig_pool() as compute:
        a, b = gather(T.where(), T.where()) >> compute
        parts = compute.partitions
        sim = migpool.SimulatedBackend("A100-80GB")
        assert {d.uuid for d in sim.mig_devices(0)} == {p.uuid for p in parts}
        assert {a["info"].worker, b["info"].worker} == {0, 1}
        for r in (a, b):
            info = r["info"]
            assert r["cuda"] == r["initial_cuda"] == info.partition.uuid == parts[info.worker].uuid
            assert info.partition.profile == "3g.40gb" and info.partition.gpu_index == 0
            assert info.partition.gpu_uuid == sim.gpus()[0].uuid and info.partition.memory_mib == 40192
            assert (info.node, info.nodes, info.concurrency) == (0, 1, 2)
        assert {p.pid for p in sim.processes(0)} == set(compute.worker_pids)  # workers show in `migpool status`
        pids = compute.worker_pids
    assert not any(pid_alive(p) for p in pids)
    assert migpool.diff({"3g.40gb": 2}, migpool.SimulatedBackend("A100-80GB")) == []  # partitions kept


def test_a_partition_is_built_from_the_mig_instance_the_driver_reports():
    sim = migpool.SimulatedBackend("H100-80GB,A100-80GB")
    migpool.apply({"3g.40gb": 1, "1g.10gb": 2}, sim, gpus=[1])
    devices = sim.mig_devices(1)
    assert len(devices) == 3
    for d in devices:
        p = migpool.Partition.of(d, node=3)
        assert (p.uuid, p.profile, p.gpu_index, p.gpu_uuid, p.memory_mib, p.gi_id, p.ci_id, p.node) == (
            d.uuid,
            d.profile_name,
            1,
            sim.gpus()[1].uuid,
            d.memory_mib,
            d.gi_id,
            d.ci_id,
            3,
        )
        assert migpool.Partition.from_env(p.to_env()) == p


def test_task_api_forms():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as compute:
        assert T.add(1, b=2) >> compute == 3
        assert gather(*[T.add(i) for i in range(20)]) >> compute == list(range(20))  # a list, as the reference (0.11+)
        assert compute.map(T.add, range(5), range(5)) == [0, 2, 4, 6, 8]  # a list, as the reference
        assert compute.map(T.add, [1, 2]) == [1, 2]
        assert compute.run_async(T.add(6)).result() == 6 and compute.run(T.add(7)) == 7
        assert compute.is_active and compute.concurrency == 2 and compute.current_nodes() == 1
        fut = compute.submit(T.add(5))
        assert isinstance(fut, Future) and fut.result() == 5
        assert compute.submit(pow, 2, 10).result() == 1024
        assert compute.submit(lambda x: x * 3, 3).result() == 9  # closures travel by value
        assert T.add.local(2, 2) == 4
    assert not compute.is_active and compute.current_nodes() == 0
    with pytest.raises(RuntimeError, match="this Compute is closed"):
        compute.submit(T.add(1))
    with pytest.raises(RuntimeError, match="context manager"):  # never opened
        Compute(worker=Worker(concurrency=1, executor="process")).submit(T.add(1))


def test_stream_yields_results_in_task_order_or_as_they_finish():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as compute:
        it = gather(T.nap(1.0, "slow"), T.nap(0.05, "fast"), stream=True, ordered=False) >> compute
        assert next(it) == "fast" and next(it) == "slow"  # as they finish
        t = time.monotonic()
        it = gather(T.nap(1.0, "slow"), T.nap(0.05, "fast"), stream=True) >> compute
        assert next(it) == "slow" and next(it) == "fast"  # the reference's default: in task order
        assert time.monotonic() - t < 1.9  # ... while both ran at once


def test_a_group_timeout_stops_its_tasks():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as compute:
        with pytest.raises(TimeoutError):
            gather(T.nap(30, "slow"), T.add(1)).with_timeout(0.5) >> compute
        with pytest.raises(migpool.TaskTimeoutError):
            T.nap(30, "slow").with_timeout(0.5) >> compute
        assert (T.add(1) & T.nap(0.01, "ok")).with_timeout(30) >> compute == [1, "ok"]


def test_many_tasks_few_workers():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as compute:
        assert gather(*[T.add(i, 1) for i in range(500)]) >> compute == [i + 1 for i in range(500)]


def test_exception_comes_back_as_itself_with_the_worker_traceback():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as compute:
        with pytest.raises(T.Boom, match="bad input") as e:
            T.fail("bad input") >> compute
        assert isinstance(e.value.__cause__, migpool.pool.RemoteTraceback)
        assert "in fail" in str(e.value.__cause__) and "raise Boom(msg)" in str(e.value.__cause__)
        with pytest.raises(TypeError, match="could not be pickled"):
            T.unpicklable_result() >> compute
        assert T.add(1) >> compute == 1


@pytest.mark.parametrize(
    "task,text", [(T.crash(3), "exited with code 3"), (T.kill_self(), "killed by signal 9 (SIGKILL)")]
)
def test_dead_worker_fails_its_task_and_is_restarted_on_the_same_partition(task, text):
    with mig_pool() as compute:
        before = {r["info"].worker: r for r in gather(T.where(), T.where()) >> compute}
        with pytest.raises(migpool.WorkerLostError) as e:
            task >> compute
        err = e.value
        assert text in str(err) and err.partition.uuid in str(err) and f"worker {err.worker}" in str(err)
        after: dict = {}
        deadline = time.monotonic() + 20
        while err.worker not in after and time.monotonic() < deadline:  # until the restarted worker answers
            after.update({r["info"].worker: r for r in gather(*[T.where() for _ in range(4)]) >> compute})
        assert after[err.worker]["cuda"] == before[err.worker]["cuda"]
        assert after[err.worker]["pid"] != before[err.worker]["pid"]


def test_retries_rerun_a_lost_task(tmp_path):
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as compute:
        assert compute.submit(T.crash_once(str(tmp_path / "m")), retries=1).result() == "second try"
    with Compute(worker=Worker(concurrency=1, executor="process"), retries=2, progress=False) as compute:
        with pytest.raises(migpool.WorkerLostError, match="tried 3 times"):
            T.crash() >> compute


def test_timeout_stops_the_task_and_the_pool_goes_on():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as compute:
        t = time.monotonic()
        with pytest.raises(migpool.TaskTimeoutError, match="timeout of 0.3s"):
            T.nap(30).with_options(timeout=0.3) >> compute
        assert time.monotonic() - t < 10
        assert T.add(2) >> compute == 2


def test_pending_tasks_are_cancelled_on_error_exit():
    with pytest.raises(KeyboardInterrupt):
        with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as compute:
            futs = [compute.submit(T.nap(5)) for _ in range(3)]
            raise KeyboardInterrupt
    assert all(f.done() for f in futs)


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import migpool, pool_tasks as T
    with migpool.Compute(worker=migpool.Worker(concurrency=2, executor="process"), progress=False) as c:
        g = c.submit(T.spawn_grandchild()).result()
        print(*c.worker_pids, g, flush=True)
        futs = [c.submit(T.nap(60)) for _ in range(4)]
        futs[0].result()
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_ctrl_c_or_a_killed_parent_leaves_no_orphans(sig, tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(tests=str(Path(__file__).parents[1]))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    pids = [int(x) for x in p.stdout.readline().split()]
    assert len(pids) == 3
    time.sleep(0.3)
    p.send_signal(sig)
    p.wait(timeout=20)
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in p.stderr.read()
    deadline = time.monotonic() + 10
    while any(pid_alive(x) for x in pids[:2]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(x) for x in pids[:2])
    if sig == signal.SIGINT:  # the worker's own children go with it (its process group is stopped)
        assert not pid_alive(pids[2])
    else:
        if pid_alive(pids[2]):
            os.kill(pids[2], signal.SIGKILL)


def test_a_worker_outlives_the_thread_that_started_it():
    """The kernel's parent-death signal fires when the *thread* that started a process ends: a worker that a
    short-lived thread (a restart, dynamic MIG's controller) started must not die with that thread."""
    import threading

    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        made = []

        def start():
            w = c._sched.add_worker(c.worker_spec(1, 2, None))
            w.ready.wait(30)  # the worker is running (and has asked to die with its parent) before this thread ends
            made.append(w)

        t = threading.Thread(target=start)
        t.start()
        t.join()
        w = made[0]
        pid = w.proc.pid
        time.sleep(1.0)
        assert w.proc.poll() is None and w.restarts == 0 and w.proc.pid == pid
        assert sorted(gather(*[T.add(i) for i in range(8)]) >> c) == list(range(8))


@pytest.fixture(scope="module")
def shared_pool():
    with Compute(worker=Worker(concurrency=2, executor="process"), progress=False) as compute:
        yield compute


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.lists(st.sampled_from(["ok", "raise", "crash", "sleep"]), min_size=1, max_size=12))
def test_every_task_ends_exactly_once(shared_pool, kinds):
    futs = [shared_pool.submit(T.outcome, k, i) for i, k in enumerate(kinds)]
    for i, (k, f) in enumerate(zip(kinds, futs, strict=False)):
        exc = f.exception(timeout=60)
        if k in ("ok", "sleep"):
            assert exc is None and f.result() == i
        elif k == "raise":
            assert isinstance(exc, T.Boom)
        else:
            assert isinstance(exc, migpool.WorkerLostError)


def test_mig_concurrency_must_agree_with_the_profile_before_anything_changes():
    with pytest.raises(migpool.PluginError) as e:
        with mig_pool(n=3):
            pass
    msg = str(e.value)
    assert (
        "concurrency=3" in msg and "at most 2 partitions of 3g.40gb" in msg and "mig(profile='2g.20gb') gives 3" in msg
    )
    assert migpool.SimulatedBackend("A100-80GB").operations() == 0


def test_mig_with_threads_is_refused_with_the_reason():
    with pytest.raises(migpool.PluginError, match="one MIG device per process"):
        with Compute(
            provider=Local(simulate="A100-80GB"),
            worker=Worker(concurrency=2, executor="thread"),
            plugins=[plugins.mig(profile="3g.40gb")],
        ):
            pass


def test_concurrency_left_out_means_one_partition_as_the_reference_and_count_all_as_many_as_fit():
    with Compute(provider=Local(simulate="A100-80GB"), plugins=[plugins.mig(profile="2g.20gb")], progress=False) as c:
        assert len(c.partitions) == 1 and len(c.worker_pids) == 1
    mig = plugins.mig(profile="2g.20gb", count="all", restore=True)
    with Compute(provider=Local(simulate="A100-80GB"), plugins=[mig], progress=False) as c:
        assert len(c.partitions) == 3 and len(c.worker_pids) == 3
    with Compute(
        provider=Local(simulate="A100-80GB"), plugins=[plugins.mig(profile="1g.10gb", count=2)], progress=False
    ) as c:
        assert len(c.partitions) == 2 and c.concurrency == 2
    with pytest.raises(migpool.PluginError, match="concurrency=3 but mig\\(count=2\\)"):
        with Compute(
            provider=Local(simulate="A100-80GB"),
            worker=Worker(concurrency=3),
            plugins=[plugins.mig(profile="1g.10gb", count=2)],
        ):
            pass
    with pytest.raises(migpool.PluginError, match="count goes with profile="):
        plugins.mig(layout={"1g.10gb": 2}, count=2)


def test_executor_auto_is_threads_without_devices_and_processes_with_them():
    # the reference's Worker(): one thread per node, in a node process (issue 42: never in the caller)
    with Compute(progress=False) as c:
        assert c.executor == "thread" and c.concurrency == 1 and (T.where() >> c)["pid"] != os.getpid()
    with Compute(provider=Local(inline=True), progress=False) as c:  # the caller's threads, asked for by name
        assert c.executor == "thread" and (T.where() >> c)["pid"] == os.getpid()
    with Compute(provider=Local(simulate="A100-80GB"), plugins=[plugins.mig(profile="3g.40gb")], progress=False) as c:
        assert c.executor == "process" and (T.where() >> c)["pid"] != os.getpid()
    with Compute(nodes=2, progress=False) as c:  # several nodes: a process each
        assert c.executor == "thread" and c.concurrency == 1
        assert len({r["pid"] for r in T.where() @ c}) == 2
    with pytest.raises(migpool.PluginError, match="reuse_processes=False only applies"):
        Worker(reuse_processes=False)
    with pytest.raises(migpool.PluginError, match="buffer must be"):
        Worker(buffer=-1)


def test_reuse_processes_false_runs_each_task_in_a_fresh_process():
    with Compute(
        worker=Worker(concurrency=2, executor="process", reuse_processes=False, buffer=3), progress=False
    ) as c:
        pids = [r["pid"] for r in gather(*[T.where() for _ in range(6)]) >> c]
        assert len(set(pids)) == 6  # one process per task
        assert c.run(T.add(1, 2)) == 3
        assert sum(w["tasks_lost"] for w in c.stats()["workers"]) == 0  # each process ended after its task, by design


def test_mixed_layout_routes_tasks_to_partition_kinds():
    with Compute(
        provider=Local(simulate="A100-80GB"), plugins=[plugins.mig(layout={"3g.40gb": 1, "1g.10gb": 2})], progress=False
    ) as c:
        small = gather(*[T.where().on("1g.10gb") for _ in range(6)]) >> c
        assert {r["info"].partition.profile for r in small} == {"1g.10gb"}
        big = migpool.function(partition="3g.40gb")(T.where.fn)
        assert (big() >> c)["info"].partition.profile == "3g.40gb"
        with pytest.raises(migpool.PluginError, match="no worker runs on a 7g.80gb partition"):
            c.submit(T.where().on("7g.80gb"))


def test_several_gpus_and_a_partition_need():
    with Compute(
        provider=Local(simulate="A100-80GB:2"),
        plugins=[plugins.mig(profile="3g.40gb", gpus="all", count="all")],
        progress=False,
    ) as c:
        rs = gather(*[T.where() for _ in range(8)]) >> c
        assert {r["info"].partition.gpu_index for r in rs} == {0, 1} and len(c.partitions) == 4
    with Compute(
        provider=Local(simulate="A100-80GB"), plugins=[plugins.mig(partitions=4, min_memory="16GB")], progress=False
    ) as c:
        assert {p.profile for p in c.partitions} == {"1g.20gb"} and len(c.partitions) == 4


def test_restore_returns_the_gpu_to_its_prior_state():
    with mig_pool(restore=True):
        assert migpool.SimulatedBackend("A100-80GB").gpus()[0].mig_current
    assert not migpool.SimulatedBackend("A100-80GB").gpus()[0].mig_current


def test_simulation_from_the_environment_and_never_a_silent_fallback(monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", "H100-80GB")
    with Compute(
        worker=Worker(concurrency=2, executor="process"), plugins=[plugins.mig(profile="3g.40gb")], progress=False
    ) as c:
        assert c.partitions[0].profile == "3g.40gb"
    monkeypatch.delenv("MIGPOOL_SIMULATE")
    try:
        import pynvml

        pynvml.nvmlInit()
        pytest.skip("a real NVIDIA driver is present")
    except Exception:  # noqa: BLE001 - no driver here, as the test needs
        pass
    with pytest.raises(migpool.NotSupportedError, match="simulate"):
        with Compute(worker=Worker(concurrency=2, executor="process"), plugins=[plugins.mig(profile="3g.40gb")]):
            pass


def test_thread_executor_without_mig():
    # issue 42: the threads of one node process, as the reference's node runs them; every task sees worker 0
    with Compute(worker=Worker(concurrency=2, executor="thread"), progress=False) as c:
        infos = gather(*[T.where() for _ in range(4)]) >> c
        pids = {r["pid"] for r in infos}
        assert {r["info"].worker for r in infos} == {0} and len(pids) == 1 and os.getpid() not in pids


def test_image_env_and_satisfied_requirements_install_nothing():
    img = Image(pip=["cloudpickle>=1", "pytest"], env={"MY_SETTING": "42"})
    assert img.missing() == [] and img.interpreter() == sys.executable
    with Compute(worker=Worker(concurrency=1, executor="process"), image=img, progress=False) as c:
        assert c.submit(T.getenv, "MY_SETTING").result() == "42"


def _wheel(tmp_path: Path) -> Path:
    whl = tmp_path / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("tinypkg/__init__.py", "VALUE = 'from the image'\n")
        z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        z.writestr(
            "tinypkg-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr("tinypkg-1.0.dist-info/RECORD", "")
    return whl


def test_image_builds_a_cached_environment_when_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGPOOL_IMAGE_DIR", str(tmp_path / "images"))
    img = Image(pip=[str(_wheel(tmp_path))])
    with Compute(worker=Worker(concurrency=1, executor="process"), image=img, progress=False) as c:
        r = c.submit(T.where()).result()
        assert r["exe"] != sys.executable and r["exe"].startswith(str(tmp_path / "images"))
        assert c.submit(_import_tinypkg).result() == "from the image"
    assert img.interpreter() == r["exe"]  # cached


def test_image_lives_under_the_cache_dir_and_says_what_it_installs(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("MIGPOOL_IMAGE_DIR", raising=False)
    monkeypatch.setenv("MIGPOOL_CACHE_DIR", str(tmp_path / "cache"))
    img = Image(pip=[str(_wheel(tmp_path))])
    exe = img.interpreter(progress=True)
    err = capfd.readouterr().err
    assert exe.startswith(str(tmp_path / "cache" / "images"))
    assert "installing" in err and "tinypkg" in err and str(tmp_path / "cache" / "images") in err
    assert "migpool: pip:" in err  # the installer's own lines, as they come
    assert re.search(r"worker environment ready: .* \([\d,]+ MiB\)", err)


def _import_tinypkg():
    import tinypkg

    return tinypkg.VALUE


def test_image_install_failure_reports_the_installer_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGPOOL_IMAGE_DIR", str(tmp_path / "images"))
    with pytest.raises(migpool.ImageError) as e:
        Image(pip=[str(tmp_path / "missing-1.0-py3-none-any.whl")]).interpreter()
    assert "installing" in str(e.value) and ("does not exist" in str(e.value) or "not found" in str(e.value).lower())


def test_fresh_lambdas_share_one_function_id():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as c:
        assert [c.submit(lambda x: x + 1, i).result() for i in range(300)] == list(range(1, 301))
        assert len(c._sched.functions.pickled) == 1 and len(c._sched.functions._recent) <= 256


def _closure_that_fails(msg):
    def inner():
        raise T.Boom(msg)  # the closure's own line

    return inner


def test_traceback_of_a_by_value_function_names_its_file_and_source_line():
    """Closures travel by value (cloudpickle); the traceback must still name this file and show the line."""
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as compute:
        with pytest.raises(T.Boom) as e:
            compute.submit(_closure_that_fails("x")).result()
    tb = str(e.value.__cause__)
    assert f'File "{__file__}"' in tb and "in inner" in tb and "raise T.Boom(msg)  # the closure's own line" in tb
    assert "<dynamic-code>" not in tb and "migpool/pool/worker.py" not in tb


def test_traceback_source_lines_the_worker_cannot_read_come_from_the_parent():
    """Code from a notebook cell (a file name only the parent's linecache knows) still shows its lines."""
    import linecache

    src = "def cell_fn(x):\n    y = x + 1\n    raise KeyError(f'cell says {y}')\n"
    name = "<migpool-test-cell-1>"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    ns: dict = {}
    exec(compile(src, name, "exec"), ns)
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as compute:
        with pytest.raises(KeyError, match="cell says 2") as e:
            compute.submit(ns["cell_fn"], 1).result()
    tb = str(e.value.__cause__)
    assert f'File "{name}", line 3, in cell_fn' in tb and "raise KeyError(f'cell says {y}')" in tb


def test_chained_exceptions_keep_their_chain(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(
        "import migpool as sky\n"
        "@sky.function\n"
        "def parse(s):\n"
        "    try:\n"
        "        return int(s)\n"
        "    except ValueError as e:\n"
        "        raise RuntimeError('bad number') from e\n"
        "if __name__ == '__main__':\n"
        "    with sky.Compute(worker=sky.Worker(concurrency=1, executor='process'), progress=False) as c:\n"
        "        try:\n"
        "            parse('x') >> c\n"
        "        except RuntimeError as e:\n"
        "            print(e.__cause__)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tb = out.stdout
    assert f'File "{script}", line 5, in parse' in tb and "return int(s)" in tb
    assert "The above exception was the direct cause" in tb
    assert f'File "{script}", line 7, in parse' in tb and "raise RuntimeError('bad number') from e" in tb


def test_a_module_the_worker_cannot_import_travels_by_value(tmp_path):
    """A decorated function from a module whose directory left sys.path still runs, and its traceback still
    names its file and line."""
    (tmp_path / "gone_mod.py").write_text(
        "import migpool\n@migpool.function\ndef twice(x):\n    if x < 0:\n        raise ValueError('negative')\n"
        "    return 2 * x\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import gone_mod
    finally:
        sys.path.remove(str(tmp_path))
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as compute:
        assert gone_mod.twice(4) >> compute == 8
        with pytest.raises(ValueError) as e:
            gone_mod.twice(-1) >> compute
    tb = str(e.value.__cause__)
    assert f'File "{tmp_path / "gone_mod.py"}", line 5, in twice' in tb and "raise ValueError('negative')" in tb


class _StandInRayPool:
    """What a Ray slot reads of its pool before it starts an actor: the node it is pinned to. No Ray is needed to
    ask a slot how many jobs it takes."""

    nodes = [types.SimpleNamespace(node_id="stand-in", plugins=[])]


class _StandInProvisioner:
    """Dynamic MIG's side of the scheduler, doing nothing: present, it makes every slot take one job at a time."""

    def admit(self, task):
        pass

    def wake(self):
        pass

    def rank(self, job, worker):
        return 0

    def hold(self, job, idle, held):
        return False


def _tiny(x):
    return x


def _items(n):
    yield from range(n)


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_every_kind_of_slot_shares_one_capacity_gate(kind):
    """A draining slot (dynamic MIG is about to free its partition) takes no job, under dynamic MIG a slot takes
    one job at a time, and nothing queues behind a stream: for a local process and a Ray actor alike (the Ray
    slot once had a gate of its own that ignored all three)."""
    from migpool.pool.api.providers import WorkerSpec
    from migpool.pool.api.task import Task
    from migpool.pool.raypool.slot import RaySlot
    from migpool.pool.scheduler.core import Scheduler

    def ray_slot(sched, spec):
        return RaySlot(sched, spec, _StandInRayPool())

    sched = Scheduler([WorkerSpec(0, sys.executable, {})], slot=None if kind == "process" else ray_slot)
    (w,) = sched.workers
    w.ready.set()  # (as its reader does once its worker is up; none is started here)
    try:
        with sched.lock:
            w.draining = True
        sched.submit(Task(_tiny, (1,)))
        assert not w.outstanding and len(sched.pending) == 1  # it waits: the only slot drains
        with sched.lock:
            w.draining = False
        sched.pump()
        assert len(w.outstanding) == 1 and not sched.pending
        for i in range(3):
            sched.submit(Task(_tiny, (i,)))
        assert len(w.outstanding) >= 2  # (no dynamic MIG: the next jobs wait at the worker, ready)
        with sched.lock:
            w.outstanding.clear()
            sched.pending.clear()
            sched.provisioner = _StandInProvisioner()
        for i in range(3):
            sched.submit(Task(_tiny, (i,)))
        assert len(w.outstanding) == 1 and len(sched.pending) == 2  # dynamic MIG: one at a time
        with sched.lock:
            w.outstanding.clear()
            sched.pending.clear()
            sched.provisioner = None
        sched.submit(Task(_items, (3,)))
        sched.submit(Task(_tiny, (0,)))
        assert len(w.outstanding) == 1 and w.outstanding[0].stream is not None  # a stream runs alone
        assert len(sched.pending) == 1
    finally:
        sched.spawner.stop()  # (no worker ran: its spawning thread is the scheduler's only thread)
        assert sched.threads.join(5) == []
        sched.codec.close()


MAIN_ARGUMENTS = """
import dataclasses
import migpool as sky

@dataclasses.dataclass
class Config:
    n: int

def double(x):
    return 2 * x

@sky.function
def use(cfg, fn):
    return fn(cfg.n)

if __name__ == "__main__":
    for executor in ("thread", "process"):
        with sky.Compute(sky.Local(), sky.Worker(executor=executor), progress=False) as c:
            print(use(Config(21), double) >> c)
"""


def test_a_scripts_own_classes_and_functions_travel_as_arguments(tmp_path):
    """A dataclass instance and a function of the script (`__main__`) as a task's arguments: plain pickle names
    them `__main__.Config`, which a worker's `__main__` lacks; they go by value (before: AttributeError in the
    worker, on every executor now that threads run in a node process)."""
    script = tmp_path / "script.py"
    script.write_text(MAIN_ARGUMENTS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["42", "42"]
