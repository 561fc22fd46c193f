"""`migpool export --slurm` and the task prolog, proven on a real Slurm (Debian's slurmctld, slurmd, slurm-client and
munge, which .ci/run installs): a one-node cluster on loopback loads the export for a simulated machine with MIG
devices of four kinds (one a compute instance sharing its GPU instance) and a whole GPU; the node registers IDLE
with the typed counts, a job of each type runs and sees the UUID of a device of its type through the prolog, a job
that asks for more than is free waits for Resources. The tests without Slurm check the rest against the sources:
the NVML form's type names (Slurm's gpu_nvml.c), the prolog's parsing and its refusals."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
import slurm_cluster
from click.testing import CliRunner

from migpool import SimulatedBackend
from migpool.backend import GpuInfo
from migpool.cli import commands as cli
from migpool.integrations import slurm, slurm_prolog
from migpool.mig.layout import Layout

SIM = "A100-80GB:3"
NODE = "gpunode1"
LAYOUT = {0: "3g.40gb:1,1g.10gb:2,1c.2g.20gb:2", 2: "7g.80gb:1"}  # GPU 1 stays whole
needs_slurm = pytest.mark.skipif(
    (bool(slurm_cluster.missing()) and not os.environ.get("CI")) or os.geteuid() != 0,
    reason="needs root and Debian's slurmctld, slurmd, slurm-client and munge",
)


def mp(*args: str) -> str:
    r = CliRunner().invoke(cli.main, list(args), env={"COLUMNS": "80", "MIGPOOL_SIMULATE": SIM})
    assert r.exit_code == 0, r.output
    return r.output


def _machine() -> SimulatedBackend:
    for gpu, layout in LAYOUT.items():
        mp("apply", layout, "--gpu", str(gpu))
    return SimulatedBackend(SIM)


def _expected(b: SimulatedBackend) -> dict[str, set[str]]:
    """The UUIDs of each type's devices on the simulated machine."""
    out: dict[str, set[str]] = {}
    for g in b.gpus():
        if g.mig_current:
            for m in b.mig_devices(g.index):
                out.setdefault(m.profile_name, set()).add(m.uuid)
        else:
            out.setdefault(b.model(g.index).key.lower(), set()).add(g.uuid)
    return out


def _mknod(paths: list[str]) -> None:
    for i, p in enumerate(sorted(set(paths))):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        major = 195 if "/nvidia-caps/" not in p else 237
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(major, i))


def _sbatch(out: Path, gres: str, *, wait: bool = True, script: str = 'echo "$CUDA_VISIBLE_DEVICES"') -> list[str]:
    """An sbatch command line: one job asking for `gres`, writing to `out`."""
    return ["sbatch", "--parsable", f"--gres={gres}", "--mem=10", f"--output={out}", f"--wrap={script}"] + (
        ["--wait"] if wait else []
    )


def _job_state(cluster: slurm_cluster.SlurmCluster, job: str) -> tuple[str, str]:
    info = cluster.run("squeue", "-h", "-j", job, "-o", "%T %r", check=False).stdout.split()
    return (info[0], info[1]) if len(info) == 2 else ("GONE", "")


@needs_slurm
def test_a_real_slurm_runs_each_type_on_its_own_mig_device(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", SIM)  # the jobs (and so the prolog) see the simulated machine
    b = _machine()
    dev = tmp_path / "devroot"
    exported = json.loads(mp("export", "--slurm", "--json", "--dev-root", str(dev), "--node-name", NODE))
    text = mp("export", "--slurm", "--dev-root", str(dev), "--node-name", NODE)
    gres_part, _, slurm_part = text.partition("\n\n")
    assert gres_part.startswith("# gres.conf") and slurm_part.startswith("# slurm.conf")
    _mknod([f for d in exported["devices"] for f in d["files"]])
    gres_lines = [x for x in gres_part.splitlines() if not x.startswith("#")]
    slurm_lines = [x for x in slurm_part.splitlines() if not x.startswith("#")]
    assert any(x.startswith("TaskProlog=/") for x in slurm_lines)  # this installation's prolog, by full path

    cluster = slurm_cluster.SlurmCluster(tmp_path / "slurm", NODE, slurm_lines, gres_lines)
    try:
        cluster.start()
        info = cluster.wait_idle()
        expected = _expected(b)
        assert sorted(info["Gres"].split(",")) == sorted(f"gpu:{t}:{len(u)}" for t, u in expected.items())

        # The prolog numbers the records as slurmd does (slurmd -G prints its own numbering).
        shown = cluster.run("slurmd", "-G", "-N", NODE).stderr + cluster.run("slurmd", "-G", "-N", NODE).stdout
        slurmd_order = re.findall(r"Type=(\S+) Count=1 Index=\d+ ID=\d+ File=(\S+)", shown)
        ours = slurm_prolog.job_records(cluster.conf, NODE, list(range(len(exported["devices"]))))
        assert ours is not None and [(r.type, ",".join(r.files)) for r in ours] == slurmd_order

        # One job of each type, all at once, and one asking for two 1g.10gb devices.
        outs = {t: tmp_path / f"out-{t}.txt" for t in expected}
        asks = {t: f"gpu:{t}:1" for t in expected} | {"two": "gpu:1g.10gb:2", "untyped": "gpu:1"}
        outs |= {"two": tmp_path / "out-two.txt", "untyped": tmp_path / "out-untyped.txt"}
        jobs = {t: cluster.spawn(*_sbatch(outs[t], g)) for t, g in asks.items()}
        assert {t: p.wait(timeout=120) for t, p in jobs.items()} == {t: 0 for t in jobs}, cluster.logs()
        seen = {t: outs[t].read_text().strip() for t in asks}
        for t in expected:
            assert seen[t] in expected[t], (t, seen[t])  # a device of the type asked for, by UUID
        two = seen["two"].split(",")
        assert len(set(two)) == 2 and set(two) <= expected["1g.10gb"]
        assert seen["untyped"] in set().union(*expected.values())

        # Counts are enforced: a second 3g.40gb job waits for Resources while the first holds the only one,
        # and a 1g.10gb job runs meanwhile (only the GPU made it wait).
        hold = cluster.run(*_sbatch(tmp_path / "hold.txt", "gpu:3g.40gb:1", wait=False, script="sleep 300"))
        hold_id = hold.stdout.strip()
        deadline = time.monotonic() + 60
        while _job_state(cluster, hold_id)[0] != "RUNNING":
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.2)
        waiting = cluster.run(*_sbatch(tmp_path / "waits.txt", "gpu:3g.40gb:1", wait=False)).stdout.strip()
        while _job_state(cluster, waiting) != ("PENDING", "Resources"):
            assert time.monotonic() < deadline, (_job_state(cluster, waiting), cluster.logs())
            time.sleep(0.2)
        queue = cluster.run("squeue", "-o", "%.5i %.8T %.10r %b").stdout
        beside = cluster.run(*_sbatch(tmp_path / "beside.txt", "gpu:1g.10gb:1"), check=False)
        assert beside.returncode == 0 and _job_state(cluster, waiting)[0] == "PENDING"
        cluster.run("scancel", hold_id)
        while _job_state(cluster, waiting)[0] != "GONE":
            assert time.monotonic() < deadline + 60, cluster.logs()
            time.sleep(0.2)
        assert (tmp_path / "waits.txt").read_text().strip() == seen["3g.40gb"]  # the one 3g.40gb, once free
        _transcript(text.replace(str(dev), ""), info, asks, seen, queue)
    finally:
        cluster.stop()
    assert all(p.poll() is not None for p in cluster.procs)


def _transcript(export: str, node: dict[str, str], asks: dict[str, str], seen: dict[str, str], queue: str) -> None:
    """What the test saw, for docs/slurm.md (written where $MIGPOOL_TRANSCRIPT_DIR points)."""
    where = os.environ.get("MIGPOOL_TRANSCRIPT_DIR")
    if not where:
        return
    jobs = "\n".join(f"--gres={g:<18} CUDA_VISIBLE_DEVICES={seen[t]}" for t, g in asks.items())
    Path(where, "slurm.txt").write_text(
        f"$ migpool export --slurm --node-name {NODE}\n{export}\n"
        f"$ scontrol show node {NODE}\nState={node['State']} Gres={node['Gres']}\n\n"
        f"$ sbatch --wait --gres=... --wrap 'echo $CUDA_VISIBLE_DEVICES'\n{jobs}\n\n"
        f"$ squeue   # a second 3g.40gb job while the first holds the only one\n{queue}"
    )


# --- without Slurm ---


def test_the_export_refuses_what_slurmd_would_refuse(tmp_path):
    b = SimulatedBackend(SIM)
    per_gpu = [(0, Layout.of({"3g.40gb": 1})), (1, Layout(mig_enabled=True)), (2, Layout(mig_enabled=False))]
    with pytest.raises(Exception, match="no MIG devices was found|MIG enabled and no MIG devices"):
        slurm.node_gres(b, per_gpu, "n", autodetect=True)
    with pytest.raises(Exception, match="after it, or use --autodetect nvml"):
        slurm.node_gres(b, per_gpu, "n", live=False)
    r = CliRunner().invoke(cli.main, ["export", "--dev-root", "/x", "--simulate", SIM])
    assert r.exit_code == 2 and "--autodetect and --dev-root go with --slurm" in r.output


def test_nvml_types_are_named_as_slurms_nvml_plugin_names_them():
    # gpu_nvml.c: the GPU's name up to its first '-', then _<slices>g.<round(memory MiB / 1024)>gb
    a100 = GpuInfo(0, "GPU-a", "NVIDIA A100-SXM4-80GB", 81920, True, True, True)
    h100 = GpuInfo(0, "GPU-h", "NVIDIA H100 80GB HBM3", 81559, True, True, True)
    assert slurm.nvml_mig_type(a100, 3, 40192) == "nvidia_a100_3g.39gb"
    assert slurm.nvml_mig_type(h100, 3, 40448) == "nvidia_h100_80gb_hbm3_3g.40gb"  # 39.5 rounds up, as roundl
    assert slurm.nvml_mig_type(h100, 7, 81152) == "nvidia_h100_80gb_hbm3_7g.79gb"
    assert slurm.nvml_whole_type(a100) == "nvidia_a100-sxm4-80gb"
    b = SimulatedBackend("A100-80GB:2")
    b.set_mig_mode(0, True)
    mp_layout = [(0, Layout.of({"3g.40gb": 1, "1g.10gb": 2, "1g.10gb+me": 1})), (1, Layout(mig_enabled=False))]
    node = slurm.node_gres(b, mp_layout, "n", autodetect=True, live=False)
    mem = {p.name: p.memory_mib for p in b.model(0).profiles}
    assert node.counts == {
        f"nvidia_a100_3g.{round(mem['3g.40gb'] / 1024)}gb": 1,
        f"nvidia_a100_1g.{round(mem['1g.10gb'] / 1024)}gb": 3,  # +me is the same kind to Slurm's NVML plugin
        "nvidia_a100-sxm4-80gb": 1,
    }
    text = slurm.export(node)
    assert "NodeName=n AutoDetect=nvml" in text and "TaskProlog" not in text
    assert all(len(line) <= 80 for line in text.splitlines() if line.startswith("#"))


def test_hostlists_and_gres_values_are_read_as_slurm_writes_them():
    assert slurm_prolog.hostlist("gpu[01-03,7],login") == ["gpu01", "gpu02", "gpu03", "gpu7", "login"]
    assert slurm_prolog.hostlist("r[1-2]n[1-2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert slurm_prolog.split_gres("gpu:a:1(S:0,1),gpu:b:2,mps:100") == ["gpu:a:1(S:0,1)", "gpu:b:2", "mps:100"]


def _files(tmp_path: Path, slurm_conf: str, gres_conf: str) -> Path:
    (tmp_path / "slurm.conf").write_text(slurm_conf)
    (tmp_path / "gres.conf").write_text(gres_conf)
    return tmp_path / "slurm.conf"


def test_the_prolog_numbers_records_by_slurm_conf_type_order_then_gres_conf_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", SIM)
    _machine()
    exported = json.loads(mp("export", "--slurm", "--json", "--node-name", "n1"))
    gres_conf = "\n".join(reversed([x for x in exported["gres_conf"] if not x.startswith("#")]))  # any order
    types = list(dict.fromkeys(d["type"] for d in exported["devices"]))
    conf = _files(
        tmp_path,
        "NodeName=DEFAULT CPUs=2\n# a comment\nNodeName=n[0-3] Gres=" + ",".join(f"gpu:{t}:1" for t in types) + "\n",
        gres_conf + "\nNodeName=other Name=gpu Type=3g.40gb File=/dev/nvidia9\n",
    )
    env = {"SLURM_CONF": str(conf), "SLURMD_NODENAME": "n1"}
    numbered = [d["uuid"] for t in types for d in reversed(exported["devices"]) if d["type"] == t]
    for i, uuid in enumerate(numbered):
        assert slurm_prolog.prolog({**env, "SLURM_JOB_GPUS": str(i)}) == [f"export CUDA_VISIBLE_DEVICES={uuid}"]
    both = slurm_prolog.prolog({**env, "SLURM_JOB_GPUS": "4,1", "SLURM_STEP_GPUS": "2,3"})  # a step's own GPUs
    assert both == [f"export CUDA_VISIBLE_DEVICES={numbered[2]},{numbered[3]}"]
    assert slurm_prolog.prolog({**env}) == []  # a job without GPUs is left alone


def test_the_prolog_hides_every_gpu_when_it_cannot_tell(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", SIM)
    _machine()
    exported = json.loads(mp("export", "--slurm", "--json", "--node-name", "n1"))
    lines = [x for x in exported["gres_conf"] if not x.startswith("#")]
    conf = _files(tmp_path, f"NodeName=n1 Gres={exported['gres']}\n", "\n".join(lines))
    env = {"SLURM_CONF": str(conf), "SLURMD_NODENAME": "n1"}
    first = slurm_prolog.prolog({**env, "SLURM_JOB_GPUS": "0"})
    assert first[0].startswith("export CUDA_VISIBLE_DEVICES=MIG-")

    def refused(out: list[str], why: str) -> None:
        assert out[-1] == "export CUDA_VISIBLE_DEVICES=" and out[0].startswith("print migpool-slurm-prolog: error:")
        assert why in out[0], out

    records = len(exported["devices"])
    refused(slurm_prolog.prolog({**env, "SLURM_JOB_GPUS": "99"}), f"has {records} gpu record(s) for node n1")
    refused(slurm_prolog.prolog({**env, "SLURMD_NODENAME": "n2", "SLURM_JOB_GPUS": "0"}), "no Gres= for node n2")
    refused(slurm_prolog.prolog({**env, "SLURM_CONF": "/nonexistent/slurm.conf", "SLURM_JOB_GPUS": "0"}), "cannot read")
    mp("apply", "7g.80gb:1", "--gpu", "0")  # the layout changed after the export: the old files reach nothing
    refused(slurm_prolog.prolog({**env, "SLURM_JOB_GPUS": "0"}), "run `migpool export --slurm` again")
    # with AutoDetect=nvml slurmd sets the UUIDs itself: the prolog stays out of the way
    (tmp_path / "gres.conf").write_text("AutoDetect=nvml\n")
    assert slurm_prolog.prolog({**env, "SLURM_JOB_GPUS": "0"}) == []


def test_the_prolog_command_runs_as_slurm_runs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGPOOL_SIMULATE", SIM)
    _machine()
    exported = json.loads(mp("export", "--slurm", "--json", "--node-name", "n1"))
    conf = _files(
        tmp_path,
        f"NodeName=n1 Gres={exported['gres']}\n",
        "\n".join(x for x in exported["gres_conf"] if not x.startswith("#")),
    )
    env = {**os.environ, "SLURM_CONF": str(conf), "SLURMD_NODENAME": "n1", "SLURM_JOB_GPUS": "1,2"}
    out = subprocess.run([slurm.prolog_path()], env=env, capture_output=True, text=True, timeout=60)
    uuids = [exported["devices"][i]["uuid"] for i in (1, 2)]
    assert out.returncode == 0 and out.stdout == f"export CUDA_VISIBLE_DEVICES={','.join(uuids)}\n", out.stderr
