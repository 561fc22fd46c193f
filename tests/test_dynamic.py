"""Dynamic MIG on simulated GPUs: partitions made on demand per task profile, never destroying a busy one."""

import os
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import migpool
import pool_tasks as T
import scripts
from migpool import Compute, SimulatedBackend, Worker, gather, plugins, reconcile

PROFILES = ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"]


def dyn(spec="A100-80GB", **kw):
    return Compute(provider=migpool.Local(simulate=spec), worker=Worker(executor="process"),
                   plugins=[plugins.mig(dynamic=True, gpus="all", **{"keep_idle": 0.3, **kw})], progress=False)


def test_each_task_runs_on_a_partition_of_its_profile_made_for_it():
    with dyn(restore=True) as c:
        tasks = [T.profile_after(0.1).on(p) for p in ["1g.10gb", "1g.10gb", "3g.40gb", "2g.20gb", "1g.10gb"]]
        assert gather(*tasks) >> c == ["1g.10gb", "1g.10gb", "3g.40gb", "2g.20gb", "1g.10gb"]
        mem = migpool.function(min_memory="15GB")(T.profile_after.fn)
        assert mem(0) >> c == "2g.20gb"  # the smallest idle partition with at least 15 GB
        assert T.add(2) >> c == 2  # a task that names nothing takes any worker
        live = {p.profile for p in c.partitions}
        assert live <= {"1g.10gb", "3g.40gb", "2g.20gb", "1g.20gb"} and live
        changes = c.changes
    creates = [ch for ch in changes if ch["action"] == "create"]
    assert {ch["profile"] for ch in creates} >= {"1g.10gb", "3g.40gb", "2g.20gb"}
    assert all(ch["reason"] and ch["placement"] for ch in creates)
    b = SimulatedBackend("A100-80GB")
    assert not b.gpus()[0].mig_current  # restore=True: as before the pool


def test_a_large_task_is_not_starved_by_small_ones():
    """A 7g task waits for the whole GPU while 1g tasks keep arriving: it must run, and before they all end."""
    with dyn() as c:
        small = [c.submit(T.profile_after(0.15).on("1g.10gb")) for _ in range(6)]
        time.sleep(0.3)
        big = c.submit(T.profile_after(0.1).on("7g.80gb"))
        more = [c.submit(T.profile_after(0.15).on("1g.10gb")) for _ in range(20)]
        assert big.result(timeout=60) == "7g.80gb"
        done_before_big = sum(f.done() for f in more)
        assert all(f.result(timeout=60) == "1g.10gb" for f in small + more)
    assert done_before_big < len(more)  # the big one did not wait for the whole stream of small ones


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(PROFILES), st.sampled_from([0.0, 0.05, 0.2])), min_size=1, max_size=14),
       st.integers(0, 3))
def test_random_arrivals_end_exactly_once_on_legal_partitions(tmp_path_factory, arrivals, gap_ms):
    os.environ["MIGPOOL_STATE_DIR"] = str(tmp_path_factory.mktemp("dyn"))
    with dyn(restore=True) as c:
        futs = []
        for profile, seconds in arrivals:
            futs.append((profile, c.submit(T.profile_after(seconds).on(profile))))
            time.sleep(gap_ms / 100)
        for profile, f in futs:
            assert f.result(timeout=120) == profile  # no WorkerLostError: no busy partition was destroyed
        assert all(w["tasks_lost"] == 0 for w in c.stats()["workers"])
    assert not SimulatedBackend("A100-80GB").gpus()[0].mig_current  # restore=True: back to MIG disabled


@pytest.mark.parametrize("make,err,msg", [
    (lambda: plugins.mig(profile="3g.40gb", dynamic=True), migpool.PluginError, "drop profile="),
    (lambda: plugins.mig(dynamic=True, keep_idle=-1), migpool.PluginError, "keep_idle"),
])
def test_bad_configurations(make, err, msg):
    with pytest.raises(err, match=msg):
        make()


def test_bad_task_profiles_fail_at_once():
    with dyn() as c:
        with pytest.raises(migpool.PluginError, match="no GPU of this pool can ever hold a 4g.20gb"):
            c.submit(T.add(1).on("4g.20gb"))  # an A100-40GB profile
        big = migpool.function(min_memory="100GB")(T.profile_after.fn)
        with pytest.raises(migpool.PluginError, match="min_memory=100GB is more than any partition"):
            big(0) >> c
        assert T.add(1).on("1g.10gb") >> c == 1  # the pool goes on
    with pytest.raises(migpool.PluginError, match="leave Worker\\(concurrency=...\\) out"):
        with Compute(provider=migpool.Local(simulate="A100-80GB"), worker=Worker(concurrency=2),
                     plugins=[plugins.mig(dynamic=True)]):
            pass


def test_read_only_refuses_before_anything(monkeypatch):
    monkeypatch.setenv("MIGPOOL_READ_ONLY", "1")
    with pytest.raises(migpool.ReadOnlyError, match=r"dynamic=True\) creates and destroys"):
        with dyn():
            pass
    assert SimulatedBackend("A100-80GB").operations() == 0


def test_a_killed_parent_leaves_what_teardown_restore_undoes(tmp_path):
    code = ("import time, migpool as sky, pool_tasks as T\n"
            "with sky.Compute(provider=sky.Local(simulate='A100-80GB:2'), plugins=[sky.plugins.mig(dynamic=True, "
            "gpus='all')], progress=False) as c:\n"
            "    fs = [c.submit(T.profile_after(0.05).on(p)) for p in ['1g.10gb', '3g.40gb', '2g.20gb'] * 3]\n"
            "    [f.result() for f in fs]\n"
            "    print('made', flush=True)\n"
            "    c.submit(T.profile_after(60).on('4g.40gb'))\n"
            "    time.sleep(60)\n")
    proc = scripts.start(code, "made")
    try:
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    b = SimulatedBackend("A100-80GB:2")
    assert any(b.gpu_instances(i) for i in (0, 1) if b.gpu(i).mig_current)
    deadline = time.time() + 20
    while any(b.processes(i) for i in (0, 1)) and time.time() < deadline:
        time.sleep(0.1)  # the workers die with their parent
    reconcile.teardown(b, restore=True)
    assert not any(g.mig_current for g in b.gpus()) and not any(b.gpu_instances(i) for i in (0, 1) if b.gpu(i).mig_current)


def test_the_readme_example_runs_on_a_simulated_gpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).parents[1] / "examples" / "dynamic_mig.py"
    env = dict(os.environ, MIGPOOL_STATE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, str(example), "--simulate", "A100-80GB"], capture_output=True, text=True,
                       env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "train (10 steps) on 3g.40gb" in lines and "infer (batch 5) on 1g.10gb" in lines
    embeds = [ln.rsplit(" ", 1)[1] for ln in lines if ln.startswith("embed")]
    model = migpool.catalog.lookup("A100-80GB")
    assert len(embeds) == 3 and all(model.profile(p).memory_mib >= 15 * 1000**3 / 2**20 for p in embeds)
    assert any(ln.strip().startswith("create") for ln in lines)


def test_a_profile_that_partitions_made_before_the_pool_block_fails_at_once():
    b = SimulatedBackend("A100-80GB")
    reconcile.apply(migpool.MachineLayout.of(migpool.Layout.of({"1g.10gb": 1})), b)  # made before the pool
    with dyn() as c:
        with pytest.raises(migpool.PluginError, match="can ever hold a 7g.80gb partition: cannot fit"):
            c.submit(T.add(1).on("7g.80gb"))
        assert T.add(1).on("3g.40gb") >> c == 1  # what still fits runs
        assert [p.profile for p in c.partitions] == ["3g.40gb"]  # the pool's own; the 1g.10gb was left alone
    reconcile.teardown(b, restore=True)
