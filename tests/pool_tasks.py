"""Task functions for the pool tests (an importable module, as user code usually is)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import migpool


class Boom(ValueError):
    pass


@migpool.function
def where(sleep=0.0):
    time.sleep(sleep)
    info = migpool.instance_info()
    initial = dict(
        kv.split("=", 1) for kv in Path("/proc/self/environ").read_text().split("\0") if "=" in kv
    )  # the environment the process was started with
    return dict(
        info=info,
        cuda=os.environ.get("CUDA_VISIBLE_DEVICES"),
        initial_cuda=initial.get("CUDA_VISIBLE_DEVICES"),
        pid=os.getpid(),
        exe=sys.executable,
    )


@migpool.function
def add(a, b=0):
    return a + b


@migpool.function
def fail(msg):
    raise Boom(msg)


@migpool.function
def crash(code=3):
    os._exit(code)


@migpool.function
def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


@migpool.function
def nap(seconds, value=None):
    time.sleep(seconds)
    return value


@migpool.function
def crash_once(marker):
    p = Path(marker)
    if not p.exists():
        p.write_text("x")
        os._exit(7)
    return "second try"


@migpool.function
def spawn_grandchild():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return p.pid


@migpool.function
def unpicklable_result():
    import threading

    return threading.Lock()


def outcome(kind, x):
    """For the property test: 'ok' returns x, 'raise' raises Boom, 'crash' exits."""
    if kind == "ok":
        return x
    if kind == "raise":
        raise Boom(str(x))
    if kind == "sleep":
        time.sleep(0.01)
        return x
    os._exit(5)


def getenv(name):
    return os.environ.get(name)


@migpool.function
def matmul_for(seconds, size=8192):
    """Keep the GPU's tensor cores busy for about `seconds` (bf16 matrix products); returns products done."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        done += 10
    return dict(pid=os.getpid(), products=done)


@migpool.function
def profile_after(seconds):
    """Sleep, then say which partition profile ran this."""
    time.sleep(seconds)
    info = migpool.instance_info()
    return info.partition.profile if info.partition else None


@migpool.function(min_memory="9GB")
def scaling(seconds_on_1g, cap=2, power=1.0):
    """Sleeps as a job that runs faster on larger partitions, up to `cap` × a 1g's SMs (speed-up: the SMs' ratio
    to the power `power`); returns its profile."""
    from migpool.mig import catalog

    p = migpool.instance_info().partition
    model = catalog.lookup("A100-80GB")
    sms = model.profile(p.profile).sms
    one = model.profile("1g.10gb").sms
    time.sleep(seconds_on_1g / (min(sms, cap * one) / one) ** power)
    return p.profile


@migpool.function(checkpoint=True, min_memory="9GB")
def steps(n, seconds_on_1g, resume=None):
    """A checkpoint task of `n` steps, each `seconds_on_1g` on a 1g and faster on larger partitions (in proportion
    to the SMs); returns each step's (profile, pid): where every step ran, none lost or done twice."""
    from migpool import Checkpoint
    from migpool.mig import catalog

    ran = list(resume or [])
    model = catalog.lookup("A100-80GB")
    while len(ran) < n:
        p = migpool.instance_info().partition
        time.sleep(seconds_on_1g * model.profile("1g.10gb").sms / model.profile(p.profile).sms)
        ran.append((p.profile, os.getpid()))
        yield Checkpoint(ran, done=len(ran), total=n)
    return ran


@migpool.function(checkpoint=True)
def tally(n, resume=None):
    """A checkpoint task of `n` quick steps on any worker; returns each step's run (0 for the first run, 1 for
    the run resumed after its first stop, ...)."""
    from migpool import Checkpoint

    ran = list(resume or [])
    run = ran[-1] + 1 if ran else 0
    while len(ran) < n:
        time.sleep(0.01)
        ran.append(run)
        yield Checkpoint(ran, done=len(ran), total=n)
    return ran


# --- large values and streams (tests/pool/test_payload.py) ---
def segments_here():
    """The memfd segments this process has open or mapped (their names in /proc)."""
    from pathlib import Path

    fds = [p for p in Path("/proc/self/fd").iterdir() if "memfd:migpool" in _link(p)]
    maps = [line for line in Path("/proc/self/maps").read_text().splitlines() if "memfd:migpool" in line]
    return len(fds), len(maps)


def _link(p):
    try:
        return os.readlink(p)
    except OSError:
        return ""


def describe(value, owndata=True):
    """What arrived: for each array (at any depth) its sum and flags (with `owndata`: whether it owns its memory,
    which one backed by the mapping does not)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        out = dict(
            sum=float(value.sum()),
            shape=value.shape,
            writeable=value.flags.writeable,
            f=value.flags.f_contiguous,  # (NumPy sends a strided array as a contiguous copy)
        )
        if owndata:
            out["owndata"] = value.flags.owndata
        return out
    if isinstance(value, dict):
        return {k: describe(v, owndata) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(describe(v, owndata) for v in value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (type(value).__name__, len(bytes(value)), bytes(value[:4]), bytes(value[-4:]))
    return value


def write_and_report(a):
    """Writes into its argument (a task may): the caller's copy and a retry must not see it."""
    a[:] = -1
    return float(a.sum()), segments_here()


def hold_arg(a, seconds, mark=None):
    if mark is not None:  # says it has started
        Path(mark).touch()
    time.sleep(seconds)
    return a.nbytes


def make_array(n, fill=2.0):
    import numpy as np

    return np.full(n, fill)


def stored_ids(*values):
    """The ids of what the refs resolved to here, and how many stored values this worker holds."""
    from migpool.pool.api import refs

    flat = [w for v in values for w in (v if isinstance(v, list) else [v])]
    return [id(v) for v in flat], refs.held(), os.getpid()


def count_up(n, log=None):
    for i in range(n):
        if log:
            with open(log, "a") as f:
                f.write(f"{i}\n")
        yield i


def fail_at(n, at):
    for i in range(n):
        if i == at:
            raise Boom(f"failed at {i}")
        yield i


def running_sum(items):
    total = 0
    for x in items:
        total += x
    return total


def squares_of(items):
    for x in items:
        yield x * x


def slow_reader(items, seconds):
    first = next(items)
    time.sleep(seconds)
    return first


def big_items(n, size):
    import numpy as np

    for i in range(n):
        yield np.full(size, float(i))


_KEPT = []


def keep_arg(a):
    """Keeps its argument past the task (in a global): its segment must not be reused meanwhile."""
    _KEPT.append(a)
    return float(a.sum())


def kept_sums():
    return [float(a.sum()) for a in _KEPT]


def fork_and_read_later(a, path, seconds):
    """Forks a child that reads the argument after the task returned; the task returns at once."""
    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        with open(path + ".part", "w") as f:
            f.write(str(float(a.sum())))
        os.replace(path + ".part", path)  # whole, or not there yet
        os._exit(0)
    return pid


@migpool.function
def shared_round(parties, key):
    """Pool collections from a task: a counter, a barrier of `parties`, a dict written under a lock, a queue."""
    info = migpool.instance_info()
    migpool.counter("rounds").increment()
    arrived = migpool.barrier("round", parties).wait(timeout=120)
    with migpool.lock("totals", timeout=60):
        d = migpool.dict("totals")
        d[key] = d.get(key, 0) + 1
    migpool.queue("done").put(info.node)
    return info.node, arrived


@migpool.function
def getpid():
    return os.getpid()
