"""Fault injection on `migpool run`: the run killed with SIGKILL, interrupted (Ctrl-C reaches the whole foreground
group, as a terminal sends it), terminated, its output pipe closed, one copy's program killed or stopped (SIGSTOP),
at a random moment. After each round: the run ended within the bound (130 after Ctrl-C), none of its programs (nor
what they started in the background) is left running, and while any ran, `migpool status` showed its partition
held."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from faults import rounds

pytestmark = pytest.mark.chaos
BOUND_S = 30


def _token_pids(token):
    """The live processes whose command line carries `token`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rpartition(") ")[2][:1]
        except OSError:
            continue
        if token.encode() in cmd and state not in ("Z", "X"):
            out.append(int(d))
    return out


def _device(pid):
    """The MIG device a process was started on (its CUDA_VISIBLE_DEVICES), or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return None
    value = env.get(b"CUDA_VISIBLE_DEVICES", b"").decode()
    return value if value.startswith("MIG-") else None


def _leased(env):
    r = subprocess.run([sys.executable, "-m", "migpool", "status", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return {uuid for g in json.loads(r.stdout)["gpus"] for uuid in g.get("leases", {})}


def _check_held(token, env, seed):
    """No program of the run sits on a partition that status shows free."""
    running = {p: _device(p) for p in _token_pids(token)}
    if not running:
        return
    leased = _leased(env)
    still = {p: d for p, d in running.items() if d is not None and os.path.exists(f"/proc/{p}")}
    free = {p: d for p, d in still.items() if d not in leased and p in _token_pids(token)}
    assert not free, f"seed {seed}: programs run on partitions status shows free: {free}"


@pytest.mark.parametrize("seed", rounds(4))
def test_migpool_run_under_random_faults_leaves_nothing_running(seed, tmp_path):
    rng = random.Random(seed)
    token = f"{600 + rng.randint(1, 99)}.{seed}{rng.randint(10**5, 10**6)}"  # a unique `sleep` argument
    env = {**os.environ, "MIGPOOL_SIMULATE": "A100-80GB", "MIGPOOL_STATE_DIR": str(tmp_path / "state")}
    n = rng.randint(1, 3)
    argv = [sys.executable, "-m", "migpool", "run", "-p", "1g.10gb", "-n", str(n), "--"]
    argv += ["sh", "-c", f"sleep {token} & sleep {token}"]
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + BOUND_S
    while len(_token_pids(token)) < 2 * n and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 1.0))
    _check_held(token, env, seed)
    fault = rng.choice(["kill", "interrupt", "terminate", "pipe", "program", "stopped"])
    if fault == "kill":
        run.kill()
    elif fault == "interrupt":
        os.killpg(run.pid, signal.SIGINT)
    elif fault == "terminate":
        run.terminate()
    elif fault == "pipe":  # `| head` went away, then Ctrl-C
        run.stdout.close()
        run.stderr.close()
        time.sleep(0.2)
        os.killpg(run.pid, signal.SIGINT)
    elif fault == "stopped":  # a copy's program stopped (SIGSTOP, Ctrl-Z) holds on to nothing: Ctrl-C ends it too
        victims = [p for p in _token_pids(token) if p != run.pid]
        if victims:
            os.kill(rng.choice(victims), signal.SIGSTOP)
        os.killpg(run.pid, signal.SIGINT)
    else:  # one copy's program (and its background child) killed; the others stopped with Ctrl-C
        victims = [p for p in _token_pids(token) if p != run.pid]  # (its own command line names the token too)
        if victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
        time.sleep(0.2)
        os.killpg(run.pid, signal.SIGINT)
    end = time.monotonic() + BOUND_S
    while _token_pids(token) and time.monotonic() < end:
        _check_held(token, env, seed)
        time.sleep(0.05)
    try:
        code = run.wait(max(1.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail(f"seed {seed}: `migpool run` still running {BOUND_S} s after {fault}")
    left = _token_pids(token)
    if left:
        for p in left:
            os.kill(p, signal.SIGKILL)
    assert not left, f"seed {seed}: after {fault}, programs of the run still running: {left}"
    if fault in ("interrupt", "pipe", "program", "stopped"):
        assert code == 130, f"seed {seed}: Ctrl-C ({fault}) ended `migpool run` with {code}, not 130"
