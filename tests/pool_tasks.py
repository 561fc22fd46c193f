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
def scaling(seconds_on_1g, cap=2):
    """Sleeps as a job that runs faster on larger partitions, up to `cap` × a 1g's SMs; returns its profile."""
    from migpool import catalog

    p = migpool.instance_info().partition
    model = catalog.lookup("A100-80GB")
    sms = model.profile(p.profile).sms
    one = model.profile("1g.10gb").sms
    time.sleep(seconds_on_1g * one / min(sms, cap * one))
    return p.profile
