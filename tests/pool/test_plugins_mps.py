"""plugins.Mps: one MPS control daemon per MIG partition, on the simulator, with a stand-in nvidia-cuda-mps-control
on PATH that records how it was started, opens its `control` in the pipe directory, and stays up until a client
tells it `quit` (as MPS's control does)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from plugin_tasks import environment

from migpool import Compute, Local, PluginError, ReadOnlyError, gather, plugins
from migpool.pool.api.info import Partition

STANDIN = """\
    import json, os, sys, time
    pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
    if os.environ.get("STANDIN_FAILS"):
        sys.exit("cannot start: " + os.environ["STANDIN_FAILS"])
    if sys.argv[1:] in (["-f"], ["-d"]):
        keep = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY", "CUDA_VISIBLE_DEVICES",
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT")
        record = os.path.join(os.environ["STANDIN_RECORDS"], f"{os.getpid()}.json")
        seen = dict(argv=sys.argv[1:], pid=os.getpid(), env={k: os.environ.get(k) for k in keep})
        with open(record, "w") as f:
            json.dump(seen, f)
        open(os.path.join(pipe, "control"), "w").close()  # (MPS's control socket: the daemon is ready)
        while not os.path.exists(os.path.join(pipe, "quit")):
            time.sleep(0.02)
        with open(record, "w") as f:
            json.dump({**seen, "quit": True}, f)
    elif sys.stdin.read().strip() == "quit":
        if os.environ.get("STANDIN_QUIT_HANGS"):  # (MPS's quit waits for its clients to finish)
            time.sleep(60)
        open(os.path.join(pipe, "quit"), "w").close()
"""


@pytest.fixture
def standin(tmp_path, monkeypatch):
    bin_dir, records = tmp_path / "bin", tmp_path / "records"
    bin_dir.mkdir()
    records.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(f"#!{sys.executable}\n" + textwrap.dedent(STANDIN))
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_RECORDS", str(records))
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    return records


def daemons(records: Path, n: int, quit: bool = False, wait: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + wait
    while True:
        try:
            got = [json.loads(f.read_text()) for f in sorted(records.glob("*.json"))]
        except json.JSONDecodeError:  # (being written)
            got = []
        if len(got) == n and all(d.get("quit", False) == quit for d in got):
            return got
        assert time.monotonic() < deadline, f"wanted {n} daemons (quit={quit}), have {got}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


NAMES = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
         "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "MIGPOOL_PARTITION")  # fmt: skip


def test_one_daemon_per_partition_with_its_directories_and_limits(standin):
    mps = plugins.Mps(active_thread_percentage=40, pinned_memory_limit="0=2G")
    mig = plugins.Mig(profile="1g.10gb", count=2)
    with Compute(provider=Local(), plugins=[mig, mps], progress=False) as pool:
        started = daemons(standin, 2)
        uuids = {p.uuid for p in pool.partitions}
        by_uuid = {d["env"]["CUDA_VISIBLE_DEVICES"]: d for d in started}
        assert set(by_uuid) == uuids and all(d["argv"] == ["-f"] for d in started)
        for d in started:
            env = d["env"]
            assert (
                env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "40" and env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=2G"
            )
            assert Path(env["CUDA_MPS_PIPE_DIRECTORY"]).is_dir() and Path(env["CUDA_MPS_LOG_DIRECTORY"]).is_dir()
        dirs = [(d["env"]["CUDA_MPS_PIPE_DIRECTORY"], d["env"]["CUDA_MPS_LOG_DIRECTORY"]) for d in started]
        assert len({x for pair in dirs for x in pair}) == 4  # each daemon its own pipe and log directory
        seen = gather(*[environment_task() for _ in range(6)]) >> pool
        for env in seen:
            uuid = Partition.from_env(env["MIGPOOL_PARTITION"]).uuid
            daemon_env = by_uuid[uuid]["env"]
            assert env["CUDA_MPS_PIPE_DIRECTORY"] == daemon_env["CUDA_MPS_PIPE_DIRECTORY"]
            assert env["CUDA_MPS_LOG_DIRECTORY"] == daemon_env["CUDA_MPS_LOG_DIRECTORY"]
            assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "40"
            assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=2G"
    stopped = daemons(standin, 2, quit=True)
    assert all(gone(d["pid"]) for d in stopped)
    assert not any(Path(p).exists() for pair in dirs for p in pair)  # the directories are removed


def environment_task():
    from migpool.pool.api.task import Task

    return Task(environment, (NAMES,))


def test_refused_read_only_or_without_the_control_program(standin, monkeypatch, tmp_path):
    monkeypatch.setenv("MIGPOOL_READ_ONLY", "1")
    with pytest.raises(ReadOnlyError, match="MIGPOOL_READ_ONLY"):
        with Compute(provider=Local(), plugins=[plugins.Mps()], progress=False):
            pass
    monkeypatch.delenv("MIGPOOL_READ_ONLY")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PluginError, match="nvidia-cuda-mps-control, which is not on PATH"):
        with Compute(provider=Local(), plugins=[plugins.Mps()], progress=False):
            pass
    assert list(standin.glob("*.json")) == []  # nothing was started


def test_a_daemon_that_does_not_start_is_reported(standin, monkeypatch):
    monkeypatch.setenv("STANDIN_FAILS", "no GPU here")
    with pytest.raises(PluginError, match="did not open its control socket .* no GPU here"):
        with Compute(provider=Local(), plugins=[plugins.Mig(profile="3g.40gb"), plugins.Mps()], progress=False):
            pass


def test_mps_listed_before_the_partitions_is_refused(standin):
    with pytest.raises(PluginError, match="list Mps after the plugin that makes the partitions"):
        with Compute(provider=Local(), plugins=[plugins.Mps(), plugins.Mig(profile="3g.40gb")], progress=False):
            pass
    stopped = daemons(standin, 1, quit=True)  # the one it started is stopped
    assert gone(stopped[0]["pid"])


def test_parameters_are_checked():
    with pytest.raises(PluginError, match="1 to 100"):
        plugins.Mps(active_thread_percentage=0)
    with pytest.raises(PluginError, match="'0=2G'"):
        plugins.Mps(pinned_memory_limit="2G")
    assert plugins.Mps(pinned_memory_limit="0=2G,1=512M").limits() == {
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2G,1=512M"
    }


def test_a_pool_killed_with_sigkill_takes_its_daemons_with_it(standin, tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(
        "import sys, time\n"
        "from migpool import Compute, Local, plugins\n"
        "with Compute(provider=Local(), plugins=[plugins.Mps()], progress=False):\n"
        "    print('open', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"
        (started,) = daemons(standin, 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        (stopped,) = daemons(standin, 1, quit=True)
        deadline = time.monotonic() + 10
        while not gone(stopped["pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(stopped["pid"])
    finally:
        proc.kill()
        proc.wait()


def test_the_plugins_tour_runs(standin):
    """examples/plugins_tour.py (docs/guides/plugins.md's code), with the stand-in MPS control on PATH."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MIGPOOL_SIMULATE")  # (the tour names its simulated GPU itself)
    r = subprocess.run(
        [sys.executable, "examples/plugins_tour.py"], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mps: a daemon per partition: ['/" in r.stdout and "Traceback" not in r.stderr
    assert len(daemons(standin, 2, quit=True)) == 2


def test_a_daemon_whose_keeper_had_to_be_killed_ends_with_the_pool(standin, monkeypatch):
    """Review: when `quit` hung past the pool's wait, the pool killed the keeper, and its daemon lived on under
    PID 1 with its pipe directory removed: no one could tell it to quit any more."""
    import importlib

    mps = importlib.import_module("migpool.plugins.mps")  # (the module: `plugins.mps` is the plugin's class)
    monkeypatch.setenv("STANDIN_QUIT_HANGS", "1")
    monkeypatch.setattr(mps, "STOP_WAIT_S", 1.0)
    m = plugins.Mps()
    d = m.start("node")
    assert not gone(d.pid)
    m.teardown(None)
    deadline = time.monotonic() + 10
    while not gone(d.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(d.pid), "the daemon outlived its killed keeper"
