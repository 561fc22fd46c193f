"""Machine-wide state (issue 31): one lock, one lease and one journal per GPU for every caller on the machine,
whatever their home directory, kept in directories that are checked before root writes there."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import fake_pynvml
import pytest
import scripts

import migpool
from migpool import NvmlBackend, SimulatedBackend
from migpool.host.leases import Leases, holder
from migpool.host.statedirs import DEFAULT_DATA_DIR, DEFAULT_RUNTIME_DIR, system_dirs
from migpool.reconcile import core as reconcile

HELD = """
import sys, time
import fake_pynvml
from migpool import NvmlBackend, SimulatedBackend
from migpool.reconcile import core as reconcile
from migpool.host.leases import Leases
sim = SimulatedBackend("A100-80GB")
nv = NvmlBackend(nvml=fake_pynvml.make(sim))
with reconcile.locked(nv, [nv.gpu(0)], 1.0, None):
    Leases(nv.state_dirs().leases(), "holder-a").take(sys.argv[1])
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_default_directories_are_the_machines_whatever_the_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MIGPOOL_RUNTIME_DIR")
    monkeypatch.delenv("MIGPOOL_DATA_DIR")
    seen = set()
    for home in ("a", "b"):
        monkeypatch.setenv("HOME", str(tmp_path / home))
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / home / "state"))
        seen.add(system_dirs())
    (dirs,) = seen
    assert (str(dirs.runtime), str(dirs.data)) == (DEFAULT_RUNTIME_DIR, DEFAULT_DATA_DIR)


def test_two_processes_with_different_homes_exclude_each_other(monkeypatch, tmp_path):
    """Process A (one HOME) holds GPU 0's apply lock and a partition's lease; process B (another HOME) can take
    neither, and is told who holds the lease."""
    sim = SimulatedBackend("A100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim))
    reconcile.apply({"3g.40gb": 2}, nv)
    uuid = nv.mig_devices(0)[0].uuid
    monkeypatch.setenv("HOME", str(tmp_path / "home-a"))
    a = subprocess.Popen(
        [sys.executable, "-c", HELD, uuid],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(scripts.__file__).parent)},
    )
    try:
        assert a.stdout.readline().strip() == "held"
        monkeypatch.setenv("HOME", str(tmp_path / "home-b"))
        with pytest.raises(migpool.LockTimeoutError):
            reconcile.apply({"1g.10gb": 7}, nv, lock_timeout=0.3)
        with pytest.raises(migpool.LeasedError, match=f"PID {a.pid} \\(holder-a\\)"):
            Leases(nv.state_dirs().leases(), "holder-b").take(uuid)
        assert holder(nv.state_dirs().leases(write=False), uuid).pid == a.pid
    finally:
        a.kill()
        a.wait()
    assert holder(nv.state_dirs().leases(write=False), uuid) is None  # the kernel ended it with its holder
    Leases(nv.state_dirs().leases(), "holder-b").take(uuid)


def test_the_journal_one_caller_writes_is_restored_by_another(monkeypatch, tmp_path):
    """`sudo -E migpool apply` (the caller's HOME) then the boot service's `teardown --restore` (root's HOME)."""
    sim = SimulatedBackend("A100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim))
    monkeypatch.setenv("HOME", str(tmp_path / "alice"))
    reconcile.apply({"3g.40gb": 2}, nv)
    assert sim.gpus()[0].mig_current
    monkeypatch.setenv("HOME", str(tmp_path / "root"))
    reconcile.teardown(nv, restore=True)
    assert not sim.gpus()[0].mig_current and sim.mig_devices(0) == []


@pytest.mark.parametrize("what", ["lock", "journal", "lease"])
def test_a_symlink_planted_at_a_state_path_is_refused(tmp_path, what):
    sim = SimulatedBackend("A100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim))
    reconcile.apply({"3g.40gb": 1}, nv)
    target = tmp_path / "victim"
    target.write_text("precious")
    uuid = nv.mig_devices(0)[0].uuid
    path = {
        "lock": reconcile.gpu_lock_path(nv, nv.gpu(0)),
        "journal": nv.state_dirs().journal(),
        "lease": nv.state_dirs().leases() / f"{uuid}.lease",
    }[what]
    path.unlink(missing_ok=True)
    path.symlink_to(target)
    with pytest.raises(migpool.UnsafeFileError, match="symbolic link"):
        if what == "lease":
            Leases(nv.state_dirs().leases()).take(uuid)
        else:
            reconcile.apply({"1g.10gb": 7}, nv)
    assert target.read_text() == "precious"
    assert [d.profile_name for d in sim.mig_devices(0)] == ["3g.40gb"]  # nothing changed


def test_a_world_writable_or_linked_state_directory_is_refused(monkeypatch, tmp_path):
    sim = SimulatedBackend("A100-80GB")
    nv = NvmlBackend(nvml=fake_pynvml.make(sim))
    run = tmp_path / "open"
    run.mkdir()
    run.chmod(0o777)
    monkeypatch.setenv("MIGPOOL_RUNTIME_DIR", str(run))
    with pytest.raises(migpool.UnsafeFileError, match="writable by every user"):
        reconcile.apply({"3g.40gb": 1}, nv)
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv("MIGPOOL_RUNTIME_DIR", str(tmp_path / "link"))
    with pytest.raises(migpool.UnsafeFileError, match="symbolic link"):
        reconcile.apply({"3g.40gb": 1}, nv)
    assert sim.mig_devices(0) == [] and not sim.gpus()[0].mig_current


def _attempt() -> str:
    try:
        system_dirs().locks()
    except migpool.MigpoolError as e:
        return f"{type(e).__name__} {e}"
    return "no error"


def _as_nobody(fn) -> str:
    """`fn()` in a forked child that has become user `nobody` (this test runs as root)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            text = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            text = f"child failed: {e!r}"
        os.write(w, text.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return text


def test_a_caller_who_cannot_write_the_system_directory_gets_one_line(monkeypatch):
    """A non-root user (here `nobody`, or this user when not root) without the migpool group: one line that
    names the directory, the permission and how an administrator grants it; no private fall-back copy."""
    base = Path(tempfile.mkdtemp(prefix="migpool-ro-"))
    try:
        base.chmod(0o755)
        run = base / "run"
        run.mkdir(mode=0o755)
        monkeypatch.setenv("MIGPOOL_RUNTIME_DIR", str(run))
        if os.geteuid() == 0:
            text = _as_nobody(_attempt)
        else:
            run.chmod(0o555)
            text = _attempt()
        assert len(text.splitlines()) == 1, text
        assert text.startswith(f"NoPermissionError cannot write {run} (migpool's runtime state)"), text
        assert f"groupadd -f migpool; install -d -m 2775 -g migpool {run};" in text and "run as root" in text
        assert os.listdir(run) == []
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_reader_probing_a_free_lease_does_not_refuse_its_taker(tmp_path):
    """`migpool status` probes a lease with a shared lock; a pool that takes the lease at that moment, over the
    name a killed holder left in the file, waits out the probe instead of naming the dead holder."""
    import fcntl
    import json
    import threading
    import time

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "MIG-x.lease"
    stale = dict(pid=dead.pid, command="killed", user="u", since=0.0, token="t")
    path.write_text(json.dumps(stale))
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.05, os.close, (fd,)).start()
    t0 = time.monotonic()
    mine = Leases(tmp_path, "taker")
    mine.take("MIG-x")
    assert mine.holds("MIG-x") and time.monotonic() - t0 < 1
    assert holder(tmp_path, "MIG-x").command == "taker"
