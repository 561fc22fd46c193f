"""Task functions for pool/test_containment_pool.py: tasks that attack their own worker (garbage on its channel,
a daemon left behind, a generator that will not end, an iterator argument that blocks)."""

import os
import struct
import subprocess
import sys
import time

import migpool

DAEMON = """
import os, sys, time
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


@migpool.function
def garbage(kind):
    """Write garbage to this worker's channel to the pool, then wait (only the pool's reaction ends this)."""
    fd = int(sys.argv[2].split(":")[0])  # the worker's write end: `python -m migpool.pool.worker R W`
    if kind == "huge":  # a header whose body could never be held: reading it runs out of memory
        os.write(fd, struct.pack("!QI", 1 << 61, 0))
    elif kind == "descriptors":  # a header that promises descriptors nobody sent
        os.write(fd, struct.pack("!QI", 8, 7) + b"\0" * 8)
    else:  # a well-formed header, then a body that is no message
        os.write(fd, struct.pack("!QI", 8, 0) + b"notapkl!")
    time.sleep(30)
    return "the pool never noticed"


@migpool.function
def leave_daemon(path, seconds):
    """Start a daemon (double fork, its own session) that notes its PID in `path`, then run for `seconds`."""
    subprocess.run([sys.executable, "-c", DAEMON, path], check=True)
    while not os.path.exists(path):
        time.sleep(0.01)
    time.sleep(seconds)
    return "done"


@migpool.function
def endless_with_a_stuck_finally(seconds):
    """Yield forever; when stopped, take `seconds` to clean up."""
    i = 0
    try:
        while True:
            yield i
            i += 1
    finally:
        time.sleep(seconds)


@migpool.function
def total(items):
    return sum(items)


@migpool.function
def getpid():
    return os.getpid()
