"""reconcile/execute.py and host/journal.py: apply is written ahead (issue 41, failure 2); regressions."""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import migpool
from migpool.backend.simulated import SimulatedBackend
from migpool.errors import ApplyError
from migpool.host.journal import Journal
from migpool.reconcile.core import actual_instances, journal_of

OLD = {"3g.40gb": 2}
OLD_LAYOUT = ["3g.40gb@0:4", "3g.40gb@4:4"]


def layout_of(b: SimulatedBackend) -> list[str]:
    return sorted(str(a.instance) for a in actual_instances(b, 0))


def cli(*args: str, preexec=None, spec: str = "A100-80GB") -> subprocess.CompletedProcess[str]:
    """`migpool ARGS` on the simulated GPUs of this test's state directory, bounded."""
    env = {**os.environ, "COLUMNS": "200", "MIGPOOL_SIMULATE": spec}
    return subprocess.run(
        [sys.executable, "-m", "migpool", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=preexec,
        timeout=60,
    )


def refused_in_one_line(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and all(w in lines[0] for w in words), r.stderr


def no_file_writes() -> None:
    """In the child: every write to a file fails (EFBIG), as on a full disk; Python ignores SIGXFSZ."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


@pytest.fixture
def full_journal_dir(sim):
    """An A100 in the old layout whose journal and locks (the simulator's state dirs) sit on a tiny tmpfs,
    filled up; the simulator's own state file is elsewhere and writable."""
    b = sim()
    here = Path(str(b.path) + ".d")
    here.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(here)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        migpool.apply(OLD, b)
        fd = os.open(here / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError) as full:
                for _ in range(1000):
                    os.write(fd, b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield b
    finally:
        subprocess.run(["umount", "-l", str(here)], check=False)


def test_a_full_journal_directory_refuses_the_apply_before_any_change(full_journal_dir):
    b = full_journal_dir
    before = b.operations()
    r = cli("apply", "1g.10gb:7")
    refused_in_one_line(r, "nothing was changed", "journal")
    assert layout_of(b) == OLD_LAYOUT and b.operations() == before  # not one driver call was made


def test_no_writable_file_at_all_refuses_apply_and_status_still_reads(sim):
    b = sim()
    migpool.apply(OLD, b)
    r = cli("status", preexec=no_file_writes)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stdout.count("3g.40gb") == 2
    r = cli("apply", "1g.10gb:7", preexec=no_file_writes)
    refused_in_one_line(r, "nothing was changed")
    assert layout_of(b) == OLD_LAYOUT


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("a bug\nover two lines"), KeyError("x")]
)
def test_any_error_during_a_change_rolls_back_and_says_so_in_one_line(sim, monkeypatch, error):
    b = sim()
    migpool.apply(OLD, b)
    calls = []
    create = b.create_gpu_instance

    def failing(gpu, profile_id, placement):  # the first creation fails; the rollback's recreations work
        calls.append(placement)
        if len(calls) == 1:
            raise error
        return create(gpu, profile_id, placement)

    monkeypatch.setattr(b, "create_gpu_instance", failing)
    with pytest.raises(ApplyError) as e:
        migpool.apply({"1g.10gb": 7}, b)
    assert calls  # the GPU instances were destroyed by then: the old layout is back by the rollback
    text = str(e.value)
    assert "\n" not in text and "Rolled back this run's changes" in text and type(error).__name__ in text
    monkeypatch.undo()
    assert layout_of(b) == OLD_LAYOUT
    assert sorted(r.key for r in journal_of(b).created(b.gpu(0).uuid)) == [("3g.40gb", 0, 4), ("3g.40gb", 4, 4)]


def test_ctrl_c_during_a_change_rolls_back_then_goes_on(sim, monkeypatch):
    b = sim()
    migpool.apply(OLD, b)

    create = b.create_gpu_instance
    calls = []

    def interrupted(gpu, profile_id, placement):
        calls.append(placement)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return create(gpu, profile_id, placement)

    monkeypatch.setattr(b, "create_gpu_instance", interrupted)
    with pytest.raises(KeyboardInterrupt):
        migpool.apply({"1g.10gb": 7}, b)
    monkeypatch.undo()
    assert layout_of(b) == OLD_LAYOUT


def test_the_journal_holds_the_whole_change_before_the_first_one(sim, monkeypatch):
    b = sim()
    migpool.apply(OLD, b)
    uuid = b.gpu(0).uuid
    seen = []
    destroy = b.destroy_compute_instance

    def first_change(gpu, gi_id, ci_id):
        if not seen:  # read from the file, as another process would
            j = journal_of(b)
            seen.append((json.loads(j.path.read_text())[uuid], sorted(r.key for r in j.created(uuid))))
        destroy(gpu, gi_id, ci_id)

    monkeypatch.setattr(b, "destroy_compute_instance", first_change)
    migpool.apply({"1g.10gb": 7}, b)
    rec, created = seen[0]
    assert len(rec["pending"]["create"]) == 7 and len(rec["pending"]["destroy"]) == 2
    assert [k for k in created if k[0] == "1g.10gb"] == [("1g.10gb", s, 1) for s in range(7)]
    after = json.loads(journal_of(b).path.read_text())[uuid]
    assert "pending" not in after and sorted(i["start"] for i in after["created"]) == list(range(7))


def test_a_run_killed_midway_is_settled_by_the_next_apply_and_torn_down(sim):
    b = sim()
    b.inject(kill_at=3)  # enable-mig, create-gi 3g.40gb at 0:4, then killed before its compute instance
    code = "import migpool; migpool.apply({'3g.40gb': 2}, migpool.SimulatedBackend('A100-80GB'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    uuid = b.gpu(0).uuid
    j: Journal = journal_of(b)
    assert ("3g.40gb", 0, 4) in {r.key for r in j.created(uuid)}  # the pending creation counts
    migpool.apply({"3g.40gb": 2}, b)
    assert "pending" not in json.loads(j.path.read_text())[uuid]
    migpool.teardown(b)
    assert layout_of(b) == []


def test_reading_the_simulated_state_never_writes_it(sim):
    b = sim("H100-80GB")
    migpool.apply({"3g.40gb": 2}, b)
    st = os.stat(b.path)
    first = b.health(0).energy_mj
    time.sleep(0.05)
    b.gpus(), b.processes(0), b.mig_devices(0), b.gpu_instances(0), b.compute_instances(0), b.xid_events()
    assert b.health(0).energy_mj > first  # idle power keeps counting without a write
    r = cli("status", spec="H100-80GB")
    assert r.returncode == 0, r.stderr
    assert os.stat(b.path).st_ino == st.st_ino and os.stat(b.path).st_mtime_ns == st.st_mtime_ns


ROUNDS = int(os.environ.get("MIGPOOL_FAULT_ROUNDS", "16"))  # more by hand: MIGPOOL_FAULT_ROUNDS=500


@pytest.mark.chaos  # the fault-injection suite's apply loop (tests/chaos has the pool's and migpool run's)
def test_apply_under_random_faults_leaves_the_old_layout_or_the_new_and_a_true_journal(sim, monkeypatch):
    """A seeded loop: each round applies a random layout with a random fault (a driver error at a random
    operation, the journal's n-th write failing as on a full disk, or none). After each: the GPU holds the old
    layout or the new one, never a mix, and the journal counts every instance on it as migpool's."""
    import migpool.host.journal as journal_module

    rng = random.Random(41)
    b = sim()
    uuid = b.gpu(0).uuid
    goals = [{"3g.40gb": 2}, {"1g.10gb": 7}, {"2g.20gb": 3}, {"4g.40gb": 1, "3g.40gb": 1}, {"7g.80gb": 1}]
    write = journal_module.atomic_write
    for n in range(ROUNDS):
        old, goal = layout_of(b), rng.choice(goals)
        fault = rng.choice(["driver", "disk", "none"])
        if fault == "driver":
            b.inject(fail_at=rng.randint(1, 16), error=rng.choice(["unknown", "not_found", "invalid_argument"]))
        writes = iter(range(1, 100))
        fail_write = rng.randint(1, 2)

        def full_disk(path, text, *a, _fail=fail_write, _writes=writes, **kw):
            if next(_writes) == _fail:
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(path, text, *a, **kw)

        if fault == "disk":
            monkeypatch.setattr(journal_module, "atomic_write", full_disk)
        try:
            migpool.apply(goal, b)
            done = True
        except ApplyError as e:
            done = False
            assert "\n" not in str(e) and ("Rolled back" in str(e) or "nothing was changed" in str(e)), (n, e)
        monkeypatch.undo()
        b.inject()  # a fault that did not fire is dropped
        if done:
            assert migpool.diff(goal, b) == [], (n, fault)
        else:
            assert layout_of(b) == old, (n, fault)
        present = {(a.instance.profile.name, a.instance.start, a.instance.size) for a in actual_instances(b, 0)}
        assert present <= {r.key for r in journal_of(b).created(uuid)}, (n, fault)
    migpool.teardown(b)
    assert layout_of(b) == []
