"""What Slurm needs to hand out this node's GPUs and MIG devices: gres.conf and slurm.conf lines.

Slurm (https://slurm.schedmd.com/gres.html) counts each MIG device as one `gpu` GRES. Two forms:

- explicit (the default, what any slurmd accepts, also one built without NVML as Debian's and Ubuntu's
  are): `AutoDetect=off` and one gres.conf record per MIG device with its three device files
  (`MultipleFiles=/dev/nvidiaN,/dev/nvidia-caps/nvidia-cap<GI>,…cap<CI>`, devicefiles.py), typed by its
  profile; whole GPUs with `File=/dev/nvidiaN`, typed by model, since slurmd refuses a node where some GPU
  records have a type and others do not. Slurm numbers a job's GPUs by these records (in slurm.conf's type
  order, then gres.conf's order), never by MIG UUID, so the task prolog (slurm_prolog.py) maps them.
- `AutoDetect=nvml` (a slurmd built with NVML): slurmd finds the devices itself and names a MIG device's
  type `<GPU name up to its first '-'>_<slices>g.<GiB>gb`, lower case, spaces as underscores, the GiB
  rounded from the GPU instance's memory (gpu_nvml.c in Slurm's source): `nvidia_a100_3g.39gb` for an
  A100 80GB's 3g.40gb. slurm.conf's types must be those names or parts of them.
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..backend import Backend, GpuInfo
from ..errors import ConfigError, MigpoolError
from ..host.devicefiles import DeviceFiles, mig_files
from ..mig.catalog import GpuModel
from ..mig.layout import Layout
from ..ui import comment
from .slurm_prolog import PROLOG


@dataclass(frozen=True)
class GresDevice:
    """One `gpu` GRES: a MIG device or a whole GPU."""

    type: str
    gpu: int
    uuid: str  # what CUDA_VISIBLE_DEVICES takes ("" where only the type is known: a saved layout)
    files: DeviceFiles | None  # None with AutoDetect=nvml (slurmd finds them)
    what: str  # "GPU 0, 3g.40gb, GPU instance 1, compute instance 0"


@dataclass(frozen=True)
class SlurmNode:
    """A node's GRES as Slurm is to see them, in the order Slurm numbers them."""

    node: str
    autodetect: bool
    devices: tuple[GresDevice, ...]
    skipped: tuple[str, ...] = ()  # GPUs that give Slurm nothing, and why

    @property
    def counts(self) -> dict[str, int]:
        """GRES count per type, in slurm.conf's order (first appearance)."""
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.type] = out.get(d.type, 0) + 1
        return out

    @property
    def gres(self) -> str:
        """slurm.conf's Gres= value."""
        return ",".join(f"gpu:{t}:{n}" for t, n in self.counts.items())


def whole_gpu_type(gpu: GpuInfo, model: GpuModel | None) -> str:
    """The explicit form's type for a whole GPU: its catalog model (`a100-80gb`), else its NVML name."""
    if model is not None:
        return model.key.lower()
    return gpu.name.removeprefix("NVIDIA ").strip().lower().replace(" ", "_") or "gpu"


def nvml_whole_type(gpu: GpuInfo) -> str:
    """The type a slurmd with AutoDetect=nvml gives a whole GPU: its NVML name, lower case, '_' for spaces."""
    return gpu.name.lower().replace(" ", "_")


def nvml_mig_type(gpu: GpuInfo, slices: int, memory_mib: int) -> str:
    """The type a slurmd with AutoDetect=nvml gives a MIG device (see the module's docstring)."""
    prefix = gpu.name.split("-", 1)[0].lower().replace(" ", "_")
    return f"{prefix}_{slices}g.{math.floor(memory_mib / 1024 + 0.5)}gb"


def _model(backend: Backend, gpu: GpuInfo) -> GpuModel | None:
    try:
        return backend.model(gpu.index)
    except MigpoolError:
        return None


def _ordered(devices: list[GresDevice]) -> tuple[GresDevice, ...]:
    """Grouped by type in first-appearance order: gres.conf then lists each type's records together, in the
    order Slurm numbers them."""
    order: dict[str, int] = {}
    for d in devices:
        order.setdefault(d.type, len(order))
    return tuple(sorted(devices, key=lambda d: order[d.type]))  # stable: each type keeps its own order


def node_gres(
    backend: Backend,
    per_gpu: Sequence[tuple[int, Layout]],
    node: str,
    *,
    autodetect: bool = False,
    live: bool = True,
) -> SlurmNode:
    """The GRES of this node's selected GPUs. `per_gpu`: their layouts; `live`: they are the GPUs' present
    layouts (the explicit form reads each MIG device's files, so a saved layout needs --autodetect nvml)."""
    gpus = {g.index: g for g in backend.gpus()}
    if not autodetect and not live:
        raise ConfigError(
            "a saved layout's MIG devices have no device files until `migpool boot` creates them: run "
            "`migpool export --slurm` after it, or use --autodetect nvml (slurmd finds them itself)"
        )
    minors = backend.mig_minors() if not autodetect and any(lay.mig_enabled for _, lay in per_gpu) else {}
    devices: list[GresDevice] = []
    skipped: list[str] = []
    for index, layout in per_gpu:
        gpu = gpus[index]
        model = _model(backend, gpu)
        if not layout.mig_enabled:
            kind = nvml_whole_type(gpu) if autodetect else whole_gpu_type(gpu, model)
            files = None if autodetect else DeviceFiles(gpu.device_minor)
            devices.append(GresDevice(kind, index, gpu.uuid, files, f"GPU {index}, whole ({gpu.name})"))
            continue
        if not layout.counts:
            if autodetect:
                raise ConfigError(
                    f"GPU {index} has MIG enabled and no MIG devices: a slurmd with AutoDetect=nvml stops at start "
                    "('MIG mode is enabled, but no MIG devices were found'); create partitions or disable MIG on "
                    "it, or leave out --autodetect"
                )
            skipped.append(f"GPU {index}: MIG enabled, no MIG devices (Slurm gets nothing from it)")
            continue
        if autodetect:
            assert model is not None  # a MIG-enabled GPU has a profile table
            for name, n in layout.counts:
                d = model.device(name)
                kind = nvml_mig_type(gpu, d.gi.slices, d.gi.memory_mib)
                devices += [GresDevice(kind, index, "", None, f"GPU {index}, {name}")] * n
            continue
        for m in sorted(backend.mig_devices(index), key=lambda m: (m.gi_id, m.ci_id)):
            devices.append(
                GresDevice(
                    m.profile_name,
                    index,
                    m.uuid,
                    mig_files(minors, gpu.device_minor, m.gi_id, m.ci_id),
                    f"GPU {index}, {m.profile_name}, GPU instance {m.gi_id}, compute instance {m.ci_id}",
                )
            )
    return SlurmNode(node, autodetect, _ordered(devices), tuple(skipped))


def prolog_path() -> str:
    """Where this installation's task prolog is, for slurm.conf's TaskProlog=."""
    found = shutil.which(PROLOG) or str(Path(sys.executable).parent / PROLOG)
    return found if Path(found).exists() else PROLOG


def render(gres: SlurmNode, *, dev_root: str = "", prolog: str | None = None) -> tuple[list[str], list[str]]:
    """The gres.conf lines and the slurm.conf lines (comments included) for this node."""
    node = gres.node
    if gres.autodetect:
        head = (
            f"gres.conf on node {node}: slurmd finds the GPUs and MIG devices through NVML (a Slurm built with "
            "NVML; Debian's and Ubuntu's packages are not: leave out --autodetect there) and sets each job's "
            "CUDA_VISIBLE_DEVICES to its MIG devices itself."
        )
        gres_lines = [*comment(head), f"NodeName={node} AutoDetect=nvml"]
    else:
        head = (
            f"gres.conf on node {node}, as migpool read the GPUs now: one record per MIG device (its GPU's file "
            "and the capability files of its GPU and compute instance, from the driver's "
            "/proc/driver/nvidia-caps/mig-minors), whole GPUs typed by model. Replace the node's gpu lines with "
            "these, and export again after every layout change."
        )
        gres_lines = [*comment(head), f"NodeName={node} AutoDetect=off"]
        for d in gres.devices:
            assert d.files is not None
            paths = d.files.paths(dev_root)
            key = "MultipleFiles" if len(paths) > 1 else "File"
            gres_lines.append(f"# {d.what}")
            gres_lines.append(f"NodeName={node} Name=gpu Type={d.type} {key}={','.join(paths)}")
    gres_lines += [f"# {s}" for s in gres.skipped]
    slurm_lines = comment(
        "slurm.conf: put Gres= on this node's NodeName line, keeping its other words (CPUs=, RealMemory=, ...), "
        "with its types in this order: Slurm numbers a job's GPUs by it."
    )
    slurm_lines.append("GresTypes=gpu")
    if not gres.autodetect and gres.devices:
        slurm_lines += comment(
            "TaskProlog points each job's CUDA_VISIBLE_DEVICES at its devices' UUIDs (Slurm gives record numbers, "
            "which CUDA cannot use on a MIG GPU). A site with its own TaskProlog runs this one from it and passes "
            "on what it prints."
        )
        slurm_lines.append(f"TaskProlog={prolog or prolog_path()}")
    slurm_lines.append(f"NodeName={node} Gres={gres.gres}" if gres.devices else f"# NodeName={node}: no GPU to declare")
    slurm_lines += comment(
        "gres.conf and slurm.conf change together, or slurmd drains the node. Drain it first "
        f"(scontrol update nodename={node} state=drain reason=mig-layout), write both files, restart slurmctld, "
        f"then slurmd on {node}, then resume it (scontrol update nodename={node} state=resume)."
    )
    if not gres.autodetect:
        slurm_lines += comment(
            "With TaskPlugin=task/cgroup and ConstrainDevices=yes in cgroup.conf a job can open only its own "
            "device files; without them a job that names another MIG device's UUID reaches it."
        )
    return gres_lines, slurm_lines


def export(gres: SlurmNode, *, dev_root: str = "", prolog: str | None = None) -> str:
    """The text of `migpool export --slurm`: a gres.conf section, then a slurm.conf section."""
    gres_lines, slurm_lines = render(gres, dev_root=dev_root, prolog=prolog)
    return "\n".join([*gres_lines, "", *slurm_lines, ""])
