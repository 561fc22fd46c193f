"""A one-node Slurm cluster on loopback from Debian's packages (slurmctld, slurmd, slurm-client, munge), for tests:
its own munge key and socket, its state, logs and spool under one directory, ports picked free. Every daemon
runs in the foreground as a child of the test and is stopped by its PID."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel")


def missing() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """`slurm_lines`: what goes into slurm.conf after the cluster's own lines (GresTypes, TaskProlog, the node's
    NodeName line with Gres=); `gres_lines`: gres.conf. The node's other words are merged in as an operator
    merges them: its Gres= is kept, NodeAddr/CPUs/RealMemory added."""

    def __init__(self, root: Path, node: str, slurm_lines: list[str], gres_lines: list[str]) -> None:
        self.root, self.node = root, node
        self.procs: list[subprocess.Popen[bytes]] = []
        self.conf = root / "slurm.conf"
        host = socket.gethostname().split(".")[0]
        for d in ("state", "spool", "log"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.socket = root / "munge.sock"
        own = [
            "ClusterName=migpooltest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_port()}",
            f"SlurmdPort={_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=bf_interval=1",  # a job behind a waiting one starts within a second, not 30
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
        ]
        merged = [
            f"{line} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=1000 State=UNKNOWN"
            if line.startswith(f"NodeName={node} ")
            else line
            for line in slurm_lines
        ]
        # OverSubscribe: jobs share the CPUs, so that only GPUs can make a job wait
        partition = f"PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:16"
        self.conf.write_text("\n".join([*own, *merged, partition, ""]))
        (root / "gres.conf").write_text("\n".join([*gres_lines, ""]))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn(
            "munged",
            "--foreground",
            "--force",
            f"--socket={self.socket}",
            f"--key-file={key}",
            f"--pid-file={self.root / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={self.root / 'munged.seed'}",
        )
        self._wait(lambda: self.socket.exists(), "munged's socket")
        self._spawn("slurmctld", "-D", "-i")
        self._wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0, "slurmctld")
        self._spawn("slurmd", "-D", "-N", self.node)

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.procs.append(subprocess.Popen([_exe(name), *args], env=self.env, stdout=log, stderr=log))
        log.close()

    def _wait(self, ok, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up ({', '.join(dead) or 'timeout'}):\n{self.logs()}")
            time.sleep(0.1)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_exe(argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True, check=check)

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        """A client command left running (sbatch --wait); the caller waits for it."""
        return subprocess.Popen([_exe(argv[0]), *argv[1:]], env=self.env, stdout=subprocess.DEVNULL)

    def node_info(self) -> dict[str, str]:
        out = self.run("scontrol", "show", "node", self.node, "-o").stdout.split()
        return {k: v for k, _, v in (w.partition("=") for w in out)}

    def wait_idle(self, timeout: float = 30.0) -> dict[str, str]:
        self._wait(lambda: self.node_info().get("State", "").startswith("IDLE"), f"node {self.node} IDLE", timeout)
        return self.node_info()

    def logs(self) -> str:
        out = []
        for f in sorted((self.root / "log").iterdir()):
            text = f.read_text(errors="replace").strip().splitlines()[-15:]
            out.append(f"--- {f.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel every job (their slurmstepd processes are not our children), then stop the daemons by PID."""
        if self.procs and self.procs[-1].poll() is None:
            self.run("scancel", "--partition=test", check=False)
            deadline = time.monotonic() + 20
            while self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
