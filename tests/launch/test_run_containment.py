"""`migpool run` contained (issue 41, failures 8, 11, 12 and 15), regressions that once broke it: a copy ends
when its program exits, whatever it left running; `kill -9` of the run leaves no process behind; a partition's
lease is held until the last process of its copy is gone; a closed output (`| tee` ended by Ctrl-C, `| head`)
never skips the cleanup; Ctrl-C at any moment gives 130.

Each test drives the real command in its own process on a simulated A100, sends it signals and looks at /proc
(no process of the run left) and at `migpool status --json` (who leases what). Both kinds of container are
tried where it matters: a cgroup (where this machine allows one) and the sweep (MIGPOOL_CGROUP=0)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = [sys.executable, "-m", "migpool", "run", "--simulate", "A100-80GB"]
KINDS = [pytest.param({}, id="cgroup-where-allowed"), pytest.param({"MIGPOOL_CGROUP": "0"}, id="sweep")]


def _sleeper(marker: str) -> list[str]:
    return [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)", marker]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return []


def _programs(marker: str) -> list[int]:
    """The copies' programs: the processes whose last argument is `marker`."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and _alive(int(d.name)):
            argv = _cmdline(int(d.name))
            if argv and argv[-1] == marker.encode() and b"run" not in argv:
                out.append(int(d.name))
    return out


def _naming(marker: str) -> list[int]:
    """Every live process that names `marker` anywhere on its command line (the run's own, its copies' leaders
    and programs, and what those started)."""
    return [
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and int(d.name) != os.getpid() and _alive(int(d.name))
        and any(marker.encode() in a for a in _cmdline(int(d.name)))
    ]  # fmt: skip


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for t in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (t / "children").read_text().split()]
            except OSError:
                continue
            todo += [k for k in kids if k not in out]
            out.update(kids)
    return out


def _copy_cgroups(pids: set[int]) -> list[Path]:
    """The cgroups that the workers among `pids` made for their copies, still there."""
    from migpool.host.containment import own_cgroup

    mine = own_cgroup()
    if mine is None:
        return []
    return [
        d for d in mine.rglob("migpool-*-copy*") if d.name.split("-")[1].isdigit() and int(d.name.split("-")[1]) in pids
    ]


def _until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _leases() -> dict[str, dict]:
    r = subprocess.run(
        [sys.executable, "-m", "migpool", "status", "--simulate", "A100-80GB", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {u: who for g in json.loads(r.stdout)["gpus"] for u, who in g["leases"].items()}


def _start(marker: str, n: int, extra_env: dict[str, str], **popen) -> subprocess.Popen:
    p = subprocess.Popen(
        [*RUN, "-p", "1g.10gb", "-n", str(n), "--grace", "1", "--", *_sleeper(marker)],
        env={**os.environ, **extra_env}, **popen,
    )  # fmt: skip
    if not _until(lambda: len(_programs(marker)) == n, 60):
        p.kill()
        p.wait(30)
        pytest.fail(f"{n} copies did not start")
    return p


@pytest.mark.parametrize("extra_env", KINDS)
def test_a_copy_ends_when_its_program_exits_and_what_it_left_in_the_background_is_ended(extra_env):
    """Failure 8: `sh -c 'sleep 300 & echo started'` kept the copy (and the run) for the background child,
    which holds the pipes; the copy now ends with the program, and the child is ended."""
    marker = f"migpool-test-background-{os.getpid()}"
    background = " ".join(_sleeper(marker)[:2]) + f' "import time; time.sleep(600)" {marker}'
    r = subprocess.run(
        [*RUN, "-p", "1g.10gb", "-n", "2", "--json", "--", "sh", "-c", f"{background} & echo started {{index}}"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **extra_env},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(line for line in r.stdout.splitlines() if line.startswith("[1g")) == [
        "[1g.10gb#0] started 0",
        "[1g.10gb#1] started 1",
    ]
    assert _until(lambda: _naming(marker) == [], 5), "the background children outlived their copies"


@pytest.mark.parametrize("extra_env", KINDS)
def test_kill_9_of_the_run_ends_every_copy_and_every_process_of_the_run(extra_env):
    """Failure 11: after `kill -9` of `migpool run -n 3 -- sleep ...`, the three programs ran on (under PID 1)
    on partitions `status` showed free."""
    marker = f"migpool-test-kill9-{os.getpid()}-{len(extra_env)}"
    p = _start(marker, 3, extra_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    programs = _programs(marker)
    run_processes = _descendants(p.pid)
    assert set(programs) <= run_processes
    p.kill()
    p.wait(30)
    left = lambda: [pid for pid in run_processes if _alive(pid)]  # noqa: E731
    assert _until(lambda: left() == [], 10), [_cmdline(pid) for pid in left()]
    assert _leases() == {}
    assert _until(lambda: _copy_cgroups(run_processes) == [], 5), "the copies' cgroups were left behind"


def test_a_partition_stays_leased_until_the_last_process_of_its_copy_is_gone():
    """Failure 11: the lease died with `migpool run` while its program ran on. The program holds its lease's
    descriptor itself. Its parent is stopped (SIGSTOP) so that it cannot end the copy, and the run is killed:
    for as long as the program runs, its partition is shown leased, and once everything is gone, free."""
    marker = f"migpool-test-lease-{os.getpid()}"
    p = _start(marker, 1, {}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (program,) = _programs(marker)
    env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{program}/environ").read_bytes().split(b"\0") if b"=" in kv)
    held = [os.readlink(f) for f in Path(f"/proc/{program}/fd").iterdir() if os.path.exists(f)]
    lease = f"{env[b'CUDA_VISIBLE_DEVICES'].decode()}.lease"
    assert [t for t in held if os.path.basename(t) == lease], f"the program holds no {lease}: {held}"
    parent = int(Path(f"/proc/{program}/stat").read_text().rsplit(")", 1)[1].split()[1])
    run_processes = _descendants(p.pid)
    leased = _leases()
    assert len(leased) == 1
    os.kill(parent, signal.SIGSTOP)
    try:
        p.kill()
        p.wait(30)
        deadline = time.monotonic() + 10
        while _alive(program) and time.monotonic() < deadline:  # (its worker's container ends it, stopped or not)
            now = set(_leases())
            if _alive(program):  # alive after the read: it ran while status was read
                assert now == set(leased), "a partition was shown free under a running program"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGCONT)
    assert _until(lambda: not any(_alive(pid) for pid in run_processes), 10)
    assert _leases() == {}


def test_ctrl_c_with_the_output_going_to_a_tee_that_it_also_ended_stops_every_copy():
    """Failure 12: `migpool run ... 2>&1 | tee log` and Ctrl-C (to migpool and tee): migpool's writes failed
    (a broken pipe) and it exited without stopping the copies, which ran on under PID 1."""
    marker = f"migpool-test-tee-{os.getpid()}"
    p = _start(marker, 3, {}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_processes = _descendants(p.pid)
    assert p.stdout is not None
    p.stdout.close()  # tee is gone
    p.send_signal(signal.SIGINT)
    assert p.wait(30) == 130
    assert _until(lambda: not any(_alive(pid) for pid in run_processes), 10)


def test_a_closed_stdout_stops_the_run_says_so_and_leaves_nothing():
    """Failure 12: `migpool run ... | head -1`: a closed stdout made migpool exit at once, leaving the copies
    behind. It now stops them, says why on stderr and exits 141 (128 + SIGPIPE, as a shell's writer would)."""
    marker = f"migpool-test-head-{os.getpid()}"
    chatty = [sys.executable, "-c", "import time\nwhile True: print('tick', flush=True); time.sleep(0.02)", marker]
    p = subprocess.Popen(
        [*RUN, "-p", "1g.10gb", "-n", "2", "--grace", "1", "--", *chatty],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None and p.stderr is not None
    try:
        assert "tick" in p.stdout.readline()
        run_processes = _descendants(p.pid)
        p.stdout.close()  # head has its line
        err = p.stderr.read()
        assert p.wait(30) == 141, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    assert "output was closed" in err and "Traceback" not in err
    assert _until(lambda: not any(_alive(pid) for pid in run_processes), 10)


def _entered(pid: int) -> bool:
    """Whether `python -m migpool` has begun (it names its process migpool first thing)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "migpool"
    except OSError:
        return False


# (0 to 0.1 s: while the command line loads, when a Ctrl-C at times ended it with -2: see tests/cli/test_interrupts.py)
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.4, 0.8, 1.5])
def test_ctrl_c_at_any_moment_gives_130_and_ends_every_copy(delay):
    """Failure 15: Ctrl-C in the first second (while the command line loads, the pool opens, the layout is
    applied) gave a KeyboardInterrupt traceback, or `error: aborted` with status 1. `delay` counts from the
    moment migpool's first line runs (`python -m migpool` names the process migpool then): before it, Python's
    own start-up answers a Ctrl-C as it answers any script's."""
    marker = f"migpool-test-ctrl-c-{os.getpid()}-{delay}"
    p = subprocess.Popen(
        [*RUN, "-p", "1g.10gb", "-n", "2", "--grace", "1", "--", *_sleeper(marker)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert _until(lambda: _entered(p.pid) or p.poll() is not None, 10)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "aborted" not in err, err
    assert _until(lambda: _naming(marker) == [], 10)
