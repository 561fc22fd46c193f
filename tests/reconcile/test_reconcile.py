import contextlib
import fcntl
import os
import subprocess
import sys

import fake_pynvml
import pytest

import migpool
from migpool import NvmlBackend, SimulatedBackend
from migpool.reconcile import core as reconcile
from migpool.reconcile.core import actual_instances


@contextlib.contextmanager
def _held_elsewhere(path):
    """A flock on the path through a descriptor of its own, as another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def layout_of(b, gpu=0):
    return sorted(str(a.instance) for a in actual_instances(b, gpu))


def run_apply(spec, layout, extra=""):
    code = (
        f"import migpool; b = migpool.SimulatedBackend({spec!r}); "
        f"r = migpool.apply({layout!r}, b{extra}); print(len(r.operations))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)


def test_apply_is_idempotent(sim):
    b = sim()
    first = migpool.apply({"3g.40gb": 2}, b)
    assert [o.kind for o in first.operations] == ["enable-mig", "create-gi", "create-ci", "create-gi", "create-ci"]
    assert len(first.mig_devices) == 2
    ops_before = b.operations()
    assert migpool.apply({"3g.40gb": 2}, b).operations == []
    assert b.operations() == ops_before


def test_minimal_transition_keeps_matching_instances(sim):
    b = sim()
    migpool.apply({"1g.10gb": 7}, b)
    keep_uuids = {d.uuid for d in b.mig_devices(0) if d.placement.start < 4}
    res = migpool.apply({"3g.40gb": 1, "1g.10gb": 4}, b)
    kinds = [o.kind for o in res.operations]
    assert kinds.count("destroy-gi") == 3 and kinds.count("create-gi") == 1
    assert keep_uuids <= {d.uuid for d in b.mig_devices(0)}
    assert migpool.diff({"3g.40gb": 1, "1g.10gb": 4}, b) == []


def test_busy_partitions_are_never_disturbed(sim):
    b = sim()
    migpool.apply({"3g.40gb": 2}, b)
    busy = b.mig_devices(0)[1]
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        b.register_process(0, worker.pid, "trainer", busy.uuid)
        migpool.apply({"3g.40gb": 1, "1g.10gb": 3}, b)
        assert busy.uuid in {d.uuid for d in b.mig_devices(0)}
        assert worker.poll() is None  # still running
        with pytest.raises(migpool.InUseError) as e:
            migpool.apply({"7g.80gb": 1}, b)
        assert f"PID {worker.pid} (trainer) on {busy.uuid}" in str(e.value) and "--force" in str(e.value)
        assert busy.uuid in {d.uuid for d in b.mig_devices(0)}  # refused before any change
    finally:
        worker.kill()
        worker.wait()


def test_force_stops_the_processes_then_applies(sim):
    b = sim()
    migpool.apply({"3g.40gb": 2}, b)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    b.register_process(0, worker.pid, "trainer", b.mig_devices(0)[0].uuid)
    migpool.apply({"7g.80gb": 1}, b, force=True)
    assert worker.wait(timeout=10) != 0
    assert layout_of(b) == ["7g.80gb@0:8"]


def test_refusals_come_before_any_change(sim, monkeypatch):
    b = sim()
    migpool.apply({"3g.40gb": 1}, b)
    ops = b.operations()
    with pytest.raises(migpool.ProfileError, match="did you mean"):
        migpool.apply({"3g.20gb": 2}, b)
    with pytest.raises(migpool.LayoutError, match="GPU 0: cannot fit 3×3g.40gb"):
        migpool.apply({"3g.40gb": 3}, b)
    monkeypatch.setenv("MIGPOOL_READ_ONLY", "1")
    with pytest.raises(migpool.ReadOnlyError, match="create-gi 1g.10gb"):
        migpool.apply({"3g.40gb": 1, "1g.10gb": 1}, b)
    assert b.operations() == ops


def test_enabling_mig_is_refused_while_processes_use_the_gpu(sim):
    b = sim()
    b.register_process(0, os.getpid(), "jupyter")
    with pytest.raises(migpool.InUseError, match=f"PID {os.getpid()} \\(jupyter\\)"):
        migpool.apply({"3g.40gb": 2}, b)
    assert b.operations() == 0


def test_gpu_without_mig_support_is_refused():
    sim = SimulatedBackend("A100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim, non_mig=("NVIDIA T4",)))
    with pytest.raises(migpool.NotSupportedError, match="GPU 1 \\(NVIDIA T4\\) does not support MIG"):
        migpool.apply({"3g.40gb": 2}, nv, gpus=[1])


def test_missing_permission_is_refused(sim, monkeypatch):
    b = sim()
    monkeypatch.setattr(type(b), "permission_problem", lambda self: "changing MIG configuration needs root")
    with pytest.raises(migpool.NoPermissionError, match="needs root"):
        migpool.apply({"3g.40gb": 2}, b)
    assert b.operations() == 0


def test_pending_reset_is_explained_and_reset_on_request(sim):
    b = sim()
    b.set_reset_blockers(0, ["nvidia-persistenced"])
    res = migpool.apply({"3g.40gb": 2}, b)
    assert res.pending_reset and "pending a GPU reset" in res.pending_reset[0]
    with pytest.raises(migpool.ResetRequiredError, match="--reset.*nvidia-persistenced"):
        migpool.apply({"3g.40gb": 2}, b)
    b.set_reset_blockers(0, [])
    res = migpool.apply({"3g.40gb": 2}, b, reset=True)
    assert res.operations[0].kind == "reset" and len(res.mig_devices) == 2


def test_transient_busy_slices_are_retried(sim):
    b = sim()
    migpool.apply({"3g.40gb": 2}, b)
    b.inject(transient_ops=3)
    messages = []
    migpool.apply({"3g.40gb": 1, "1g.10gb": 3}, b, progress=messages.append)
    assert any("retrying" in m for m in messages)
    assert migpool.diff({"3g.40gb": 1, "1g.10gb": 3}, b) == []


def test_failure_midway_rolls_back(sim):
    b = sim()
    migpool.apply({"1g.10gb": 7}, b)
    before = layout_of(b)
    uuids = {d.uuid for d in b.mig_devices(0)}
    b.inject(fail_at=6, error="unknown")  # after some destroys, during the creates
    with pytest.raises(migpool.ApplyError) as e:
        migpool.apply({"3g.40gb": 1, "1g.10gb": 4}, b)
    assert "Rolled back" in str(e.value) and "State now" in str(e.value)
    assert layout_of(b) == before
    assert all(a.ci_ids for a in actual_instances(b, 0))
    assert len({d.uuid for d in b.mig_devices(0)} & uuids) == 4  # recreated partitions get new UUIDs, like the driver's


def test_a_change_that_fails_midway_is_rolled_back_like_an_apply(sim):
    """`change` runs through the same execute-and-rollback path as `apply`: a driver failure midway undoes the
    run, and the error says what the GPU holds now."""
    from migpool.mig.planner import plan

    b = sim()
    migpool.apply({"3g.40gb": 1}, b)
    before = layout_of(b)
    b.inject(fail_at=5, error="unknown")  # destroy-ci, destroy-gi, create-gi, create-ci, then a create-gi fails
    with pytest.raises(migpool.ApplyError) as e:
        reconcile.change(b, 0, destroy=actual_instances(b, 0), create=plan(b.model(0), {"1g.10gb": 7}))
    assert "Rolled back" in str(e.value) and "State now" in str(e.value)
    assert layout_of(b) == before and sorted(e.value.state[0]) == before
    assert all(a.ci_ids for a in actual_instances(b, 0))


TRANSITIONS = [
    ("A100-80GB", None, {"3g.40gb": 2}),
    ("A100-80GB", {"1g.10gb": 7}, {"3g.40gb": 1, "1g.10gb": 4}),
    ("H100-80GB", {"3g.40gb": 2}, {"3g.40gb": 1, "1g.10gb": 3}),
]


@pytest.mark.parametrize("spec,start,goal", TRANSITIONS)
def test_killed_at_every_operation_the_next_apply_converges(spec, start, goal, tmp_path, monkeypatch):
    probe = SimulatedBackend(spec, state_path=tmp_path / "probe.json")
    if start:
        migpool.apply(start, probe)
    n = len(migpool.plan_apply(goal, probe).operations)
    assert n >= 5
    for k in range(1, n + 1):
        monkeypatch.setenv("MIGPOOL_STATE_DIR", str(tmp_path / f"k{k}"))
        b = SimulatedBackend(spec)
        if start:
            migpool.apply(start, b)
        b.inject(kill_at=k)
        r = run_apply(spec, goal)
        assert r.returncode == -9, (k, r.stderr)
        migpool.apply(goal, b)
        assert migpool.diff(goal, b) == [], k
        assert all(a.ci_ids for a in actual_instances(b, 0)), k
        assert len(b.mig_devices(0)) == sum(goal.values())


def test_one_apply_at_a_time(sim):
    b = sim()
    with _held_elsewhere(reconcile.gpu_lock_path(b, b.gpu(0))):
        r = run_apply("A100-80GB", {"3g.40gb": 2}, ", lock_timeout=0.3")
    assert r.returncode == 1 and "LockTimeoutError" in r.stderr and "GPU 0" in r.stderr
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import migpool; b = migpool.SimulatedBackend('A100-80GB'); "
                "print(len(migpool.apply({'3g.40gb': 2}, b).operations))",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ,
        )
        for _ in range(2)
    ]
    counts = sorted(int(p.communicate()[0]) for p in procs)
    assert counts == [0, 5]  # one did the work, the other found it done
    assert layout_of(b) == ["3g.40gb@0:4", "3g.40gb@4:4"]


def test_teardown_removes_only_what_migpool_created_and_restore_returns_prior(sim):
    b = sim()
    b.set_mig_mode(0, True)
    gi = b.create_gpu_instance(0, 9, migpool.mig.catalog.Placement(0, 4))  # made by hand, before migpool
    b.create_compute_instance(0, gi.id)
    migpool.apply({"3g.40gb": 1, "1g.10gb": 3}, b)
    assert len(b.mig_devices(0)) == 4
    migpool.teardown(b)
    assert layout_of(b) == ["3g.40gb@0:4"]
    migpool.apply({"1g.10gb": 7}, b)
    migpool.teardown(b, restore=True)
    assert layout_of(b) == ["3g.40gb@0:4"] and b.gpus()[0].mig_current


def test_restore_disables_mig_when_it_was_off(sim):
    b = sim()
    migpool.apply({"2g.20gb": 3}, b)
    migpool.teardown(b, restore=True)
    assert b.gpus()[0].mig_current is False


def test_mig_disabled_layout(sim):
    b = sim("A100-80GB:2")
    migpool.apply({"3g.40gb": 2}, b)
    res = migpool.apply(migpool.Layout(mig_enabled=False), b, gpus=[1])
    assert [o.kind for o in res.operations][-1] == "disable-mig"
    assert [g.mig_current for g in b.gpus()] == [True, False]


def test_recreate_strategy_costs_more():
    model = migpool.mig.catalog.lookup("A100-80GB")
    seven = migpool.plan(model, {"1g.10gb": 7})
    assert reconcile.recreate_operations(model, seven, {"3g.40gb": 1, "1g.10gb": 4}) == 24
    assert reconcile.recreate_operations(model, seven, {"1g.10gb": 7}) == 0


def test_changes_to_different_gpus_run_at_once_and_the_journal_keeps_them_all(sim):
    """Each change holds only its GPU's lock: one GPU held elsewhere does not stop a change to another, and
    changes made from many threads at once all reach the journal (which has its own lock)."""
    import threading

    from migpool.mig.planner import plan

    b = sim("A100-80GB:4")
    model = b.model(0)
    with _held_elsewhere(reconcile.gpu_lock_path(b, b.gpu(0))):
        with pytest.raises(migpool.LockTimeoutError, match="GPU 0"):
            reconcile.change(b, 0, create=plan(model, {"7g.80gb": 1}), lock_timeout=0.2)
        made = reconcile.change(b, 1, create=plan(model, {"7g.80gb": 1}), lock_timeout=0.2)
        assert [d.profile_name for d in made] == ["7g.80gb"]
        with pytest.raises(migpool.LockTimeoutError):  # apply to every GPU needs GPU 0's lock too
            migpool.apply({"7g.80gb": 1}, b, lock_timeout=0.2)
    reconcile.teardown(b)
    errors = []

    def fill(gpu):
        try:
            for inst in plan(model, {"1g.10gb": 7}):  # one change per partition: many journal updates at once
                reconcile.change(b, gpu, create=[inst])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=fill, args=(g,)) for g in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    journal = reconcile.journal_of(b)
    assert all(len(journal.created(b.gpu(g).uuid)) == 7 for g in range(4))
    reconcile.teardown(b, restore=True)
    assert all(not g.mig_current for g in b.gpus())


def test_journal_updates_from_many_threads_are_all_kept(tmp_path):
    import threading

    from migpool.host.journal import InstanceRecord, Intent, Journal

    journal = Journal(tmp_path / "journal.json", tmp_path / "journal.lock")

    def record(gpu):
        for k in range(40):  # each run written ahead, then ended: two updates of the file
            mine = Journal(journal.path, journal.lock)
            mine.begin([Intent(f"GPU-{gpu}", True, [], [InstanceRecord("1g.10gb", k, 1)], [])])
            mine.commit([f"GPU-{gpu}"])

    threads = [threading.Thread(target=record, args=(g,)) for g in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [len(journal.created(f"GPU-{g}")) for g in range(6)] == [40] * 6
