"""`Mps`: NVIDIA's Multi-Process Service inside each worker's MIG partition (or, without partitions, the node's
GPUs), so that the processes a worker's tasks start share its partition's GPU context.

One MPS control daemon per partition, each with its own pipe and log directories (CUDA_MPS_PIPE_DIRECTORY,
CUDA_MPS_LOG_DIRECTORY) and CUDA_VISIBLE_DEVICES set to its partition, started when the node is bootstrapped
(after the mig plugin made the partitions: list Mps after it) and so before the partition's worker; each worker's
environment names its partition's directories. The daemon's limits for its clients, as the reference takes them:
CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (`active_thread_percentage`) and CUDA_MPS_PINNED_DEVICE_MEM_LIMIT
(`pinned_memory_limit`, e.g. "0=2G"), set for the daemon and in each worker. The daemons stop when the pool closes
(MPS's `quit`), and a pool that ends otherwise (even killed with SIGKILL) takes them with it: each daemon's keeper
(mpskeeper.py) watches the pool's process through a pidfd.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PluginError
from ..pool.api.providers import Node, WorkerSpec
from .base import Plugin

CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
THREADS_ENV = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
PINNED_ENV = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
STOP_WAIT_S = 25.0  # more than a keeper may take: `quit` (QUIT_WAIT_S), then the daemon's own end (as long)
READY_WAIT_S = 30.0  # the longest a daemon may take to open its control socket (`control` in its pipe directory)
LIMIT = re.compile(r"\d+=\d+[KMGT]?(,\d+=\d+[KMGT]?)*")


@dataclass
class Daemon:
    """One running daemon: its unit (a partition's UUID, or "node"), its keeper's PID and its own, its
    directories."""

    unit: str
    keeper: int
    pid: int
    pipe: str
    log: str


class Mps(Plugin):
    """One MPS control daemon per MIG partition (or per node, without partitions), started before its workers
    and stopped with the pool; each worker's environment points at its partition's daemon.

    Mps()                                   MPS's own defaults
    Mps(active_thread_percentage=50)        each client may use at most 50% of its partition's SMs (1-100)
    Mps(pinned_memory_limit="0=2G")         each client may pin at most 2 GB of device 0 (its partition)

    Refused (before anything starts) with MIGPOOL_READ_ONLY set, on a GPU this process may not configure, and where
    nvidia-cuda-mps-control (from the NVIDIA driver) is not on PATH.
    """

    kind = "mps"

    def __init__(self, active_thread_percentage: int | None = None, pinned_memory_limit: str | None = None) -> None:
        pct = active_thread_percentage
        if pct is not None and (isinstance(pct, bool) or not isinstance(pct, int) or not 1 <= pct <= 100):
            raise PluginError(f"Mps(active_thread_percentage=...) is a whole number from 1 to 100, not {pct!r}")
        if pinned_memory_limit is not None and not (
            isinstance(pinned_memory_limit, str) and LIMIT.fullmatch(pinned_memory_limit)
        ):
            raise PluginError(
                "Mps(pinned_memory_limit=...) is DEVICE=SIZE pairs, comma-separated, as MPS reads them "
                f"(e.g. '0=2G' or '0=512M'), not {pinned_memory_limit!r}"
            )
        self.active_thread_percentage = pct
        self.pinned_memory_limit = pinned_memory_limit
        # this plugin's daemons under a directory of their own (short: a socket's path is at most 107 bytes)
        self.root = str(Path(tempfile.gettempdir()) / f"migpool-mps-{secrets.token_hex(4)}")
        self.daemons: list[Daemon] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # this process's keepers (not carried to a Ray driver)

    def __repr__(self) -> str:
        return (
            f"Mps(active_thread_percentage={self.active_thread_percentage!r}, "
            f"pinned_memory_limit={self.pinned_memory_limit!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "procs": {}}

    def limits(self) -> dict[str, str]:
        out = {}
        if self.active_thread_percentage is not None:
            out[THREADS_ENV] = str(self.active_thread_percentage)
        if self.pinned_memory_limit is not None:
            out[PINNED_ENV] = self.pinned_memory_limit
        return out

    def directories(self, unit: str) -> tuple[str, str]:
        """The pipe and log directories of the daemon of `unit` (a partition's UUID, or "node")."""
        d = Path(self.root) / unit.replace("/", "_")
        return str(d / "pipe"), str(d / "log")

    def validate(self, node: Node) -> None:
        from ..backend.control import read_only
        from ..errors import NoPermissionError, ReadOnlyError

        if read_only():
            raise ReadOnlyError(
                "plugins.Mps() starts an MPS control daemon per partition, but MIGPOOL_READ_ONLY is set: unset "
                "it, or leave Mps out"
            )
        if not node.simulated:
            why = node.backend.permission_problem()
            if why:
                raise NoPermissionError(f"plugins.Mps(): {why}")
        if shutil.which(CONTROL) is None:
            raise PluginError(
                f"plugins.Mps() needs {CONTROL}, which is not on PATH here: it comes with the NVIDIA driver; "
                "install the driver's utilities, or leave Mps out"
            )

    def bootstrap(self, node: Node) -> None:
        units = [p.uuid for p in node.partitions] or ["node"]
        try:
            for unit in units:
                self.start(unit)
        except BaseException:
            self.teardown(node)
            raise

    def start(self, unit: str) -> Daemon:
        from ..pool.api.providers import worker_pythonpath

        control = shutil.which(CONTROL)
        if control is None:
            raise PluginError(f"plugins.Mps(): {CONTROL} is no longer on PATH")
        pipe, log = self.directories(unit)
        for d in (pipe, log):
            Path(d).mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {**os.environ, PIPE_ENV: pipe, LOG_ENV: log, "PYTHONPATH": worker_pythonpath(), **self.limits()}
        if unit != "node":
            env["CUDA_VISIBLE_DEVICES"] = unit
        argv = [sys.executable, "-m", "migpool.plugins.mpskeeper", str(os.getpid()), control]
        keeper = subprocess.Popen(  # (a session of its own: a terminal's Ctrl-C is the pool's to answer, not its)
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
        )
        self.procs[keeper.pid] = keeper
        daemon = Daemon(unit, keeper.pid, 0, pipe, log)
        self.daemons.append(daemon)  # (stopped by teardown from now on, whatever follows)
        daemon.pid = self.wait_ready(keeper, daemon)
        return daemon

    def wait_ready(self, keeper: subprocess.Popen[bytes], daemon: Daemon) -> int:
        """The daemon's PID once its control socket is open, so that its partition's worker finds it."""
        import select
        import time

        from .mpskeeper import LOG_NAME

        deadline = time.monotonic() + READY_WAIT_S
        assert keeper.stdout is not None
        line = keeper.stdout.readline() if select.select([keeper.stdout], [], [], READY_WAIT_S)[0] else b""
        if line.strip():
            control = Path(daemon.pipe) / "control"
            while keeper.poll() is None and time.monotonic() < deadline:
                if control.exists():
                    return int(line)
                time.sleep(0.01)
        log = Path(daemon.log) / LOG_NAME
        said = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise PluginError(
            f"plugins.Mps(): the MPS control daemon for {daemon.unit} did not open its control socket in "
            f"{daemon.pipe} within {READY_WAIT_S:.0f} s" + (f" (it said: {said[0][:200]})" if said else "")
        )

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        unit = worker.partition.uuid if worker.partition is not None else "node"
        started = {d.unit for d in self.daemons}  # (empty where another process bootstrapped: a Ray driver)
        if started and unit not in started:
            raise PluginError(
                f"plugins.Mps() started its daemons for {', '.join(sorted(started))}, but {worker.describe()} runs "
                "on a partition made later: list Mps after the plugin that makes the partitions (plugins=[Mig(...), "
                "Mps()]); partitions made on demand (mig(dynamic=True)) cannot have one"
            )
        pipe, log = self.directories(unit)
        return {PIPE_ENV: pipe, LOG_ENV: log, **self.limits()}

    def teardown(self, node: Node) -> None:
        """Stop every daemon (its keeper quits it the MPS way) and remove their directories."""
        import signal

        from ..host.containment import kill_by_pidfd
        from ..host.proc import pid_alive, wait_gone

        daemons, self.daemons = self.daemons, []
        stopping = []
        for d in daemons:
            proc = self.procs.pop(d.keeper, None)
            try:
                if proc is not None:
                    proc.terminate()
                else:  # (started by another process: a Ray node's agent, in an earlier call)
                    os.kill(d.keeper, signal.SIGTERM)
            except ProcessLookupError:
                pass
            stopping.append((d, proc))
        for d, proc in stopping:
            if proc is None:
                if wait_gone([d.keeper], STOP_WAIT_S):
                    os.kill(d.keeper, signal.SIGKILL)
                continue
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for d in daemons:  # a keeper that was killed left its daemon: it goes too (a pidfd names only it)
            if d.pid and pid_alive(d.pid):
                kill_by_pidfd(d.pid)
        for d in daemons:  # (only its own: a Ray pool's other nodes may share this root on one test machine)
            shutil.rmtree(Path(d.pipe).parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(self.root).rmdir()  # (when empty)

    def rollback(self, node: Node) -> None:
        self.teardown(node)
