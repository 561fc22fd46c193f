"""The keeper of one MPS control daemon: `python -m migpool.plugins.mpskeeper OWNER_PID CONTROL_PATH` starts
`CONTROL_PATH -f` (the daemon, in the foreground: this process's child) with this process's environment (its pipe
and log directories), writes the daemon's PID as one line to stdout, and stops it when told (SIGTERM) or when the
pool's process OWNER_PID ends, however it ends: the kernel says so through a pidfd of the owner (a pidfd names one
process: a reused PID is never mistaken for it). Stopping is MPS's own: `quit` written to `CONTROL_PATH` (the
client, which finds the daemon through CUDA_MPS_PIPE_DIRECTORY); a daemon still up QUIT_WAIT_S later is killed.
Exits with the daemon's status."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

QUIT_WAIT_S = 10.0
LOG_NAME = "control-daemon.out"  # the daemon's stdout and stderr, in CUDA_MPS_LOG_DIRECTORY


def quit_daemon(control: str, env: dict[str, str] | None = None) -> bool:
    """Ask the daemon that CUDA_MPS_PIPE_DIRECTORY (in `env`, else this process's) names to quit; False when the
    client could not be run or did not answer in QUIT_WAIT_S."""
    try:
        subprocess.run([control], input="quit\n", text=True, env=env, capture_output=True, timeout=QUIT_WAIT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


def keep(owner: int, control: str) -> int:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.write(wake_w, b"x"))
    try:
        owner_fd = os.pidfd_open(owner)
    except ProcessLookupError:
        return 1  # the pool is gone already: start nothing
    log = Path(os.environ.get("CUDA_MPS_LOG_DIRECTORY", ".")) / LOG_NAME
    with open(log, "ab") as out:
        daemon = subprocess.Popen([control, "-f"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    daemon_fd = os.pidfd_open(daemon.pid)
    print(daemon.pid, flush=True)
    ready, _, _ = select.select([owner_fd, daemon_fd, wake_r], [], [])
    if daemon_fd not in ready:  # the owner ended, or we were told to stop
        quit_daemon(control)
        try:
            daemon.wait(QUIT_WAIT_S)
        except subprocess.TimeoutExpired:
            daemon.kill()
    return daemon.wait()


if __name__ == "__main__":
    sys.exit(keep(int(sys.argv[1]), sys.argv[2]))
