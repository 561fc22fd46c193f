"""Task functions for tests/chaos: what a pool runs while the fault-injection loop kills its processes. A small
module (a restarted worker imports it again)."""

import os
import time

import migpool


@migpool.function
def work(i, seconds):
    """Busy for `seconds`, then `i`."""
    time.sleep(seconds)
    return i


@migpool.function
def consume(queue, name):
    """One item of pool queue `queue`, this process noted as waiting in the pool dict "waiting" first."""
    migpool.dict("waiting")[name] = os.getpid()
    return migpool.queue(queue).get(timeout=30)


@migpool.function
def leave_daemon(seconds):
    """Start a daemon that leaves this process's session and parent (a double fork and setsid), note its PID in
    the pool dict "daemons", and wait."""
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            time.sleep(300)
            os._exit(0)
        os._exit(0)
    pid = int(os.read(r, 32))
    migpool.dict("daemons")[str(pid)] = pid
    time.sleep(seconds)
    return pid


@migpool.function
def count_up(n):
    yield from range(n)
