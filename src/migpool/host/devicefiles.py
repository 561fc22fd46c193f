"""The device files through which a process reaches a GPU or a MIG device, as the NVIDIA driver names them.

A whole GPU is `/dev/nvidia<minor>`. A MIG device needs that file and two capability files,
`/dev/nvidia-caps/nvidia-cap<m>`: one that grants its GPU instance and one that grants its compute
instance. The driver lists the capability minors in `/proc/driver/nvidia-caps/mig-minors`, one line each:

    config 1
    monitor 2
    gpu0/gi0/access 3
    gpu0/gi0/ci0/access 4
    ...

`gpu<N>` there is the GPU's minor number (the N of /dev/nvidiaN). The driver numbers them in a fixed
pattern (15 GPU instances of 8 compute instances per GPU: 9 minors per GPU instance, 135 per GPU);
`standard_minors` writes that pattern for simulated GPUs, and real ones are read from the driver's file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFoundError

MIG_MINORS = Path("/proc/driver/nvidia-caps/mig-minors")
_GIS, _CIS = 15, 8
_PER_GI = 1 + _CIS
_PER_GPU = _GIS * _PER_GI


def parse_minors(text: str) -> dict[str, int]:
    """The names and minors of a mig-minors file."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit():
            out[words[0]] = int(words[1])
    return out


def read_minors(path: Path | None = None) -> dict[str, int]:
    """The driver's capability minors; NotFoundError saying why when its file is missing."""
    path = path or MIG_MINORS
    try:
        return parse_minors(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(
            f"{path} is missing: the NVIDIA driver is not loaded or predates MIG (450.80.02); "
            "MIG device files cannot be named without it"
        ) from None


def standard_minors(gpu_minors: list[int]) -> dict[str, int]:
    """The mig-minors table the driver writes for GPUs with these minor numbers."""
    out = {"config": 1, "monitor": 2}
    for gpu in gpu_minors:
        for gi in range(_GIS):
            base = 3 + gpu * _PER_GPU + gi * _PER_GI
            out[f"gpu{gpu}/gi{gi}/access"] = base
            for ci in range(_CIS):
                out[f"gpu{gpu}/gi{gi}/ci{ci}/access"] = base + 1 + ci
    return out


@dataclass(frozen=True)
class DeviceFiles:
    """What a GPU or a MIG device is reached through: its GPU's minor and, for a MIG device, the capability
    minors of its GPU instance and compute instance."""

    gpu_minor: int
    gi_cap: int | None = None
    ci_cap: int | None = None

    def paths(self, dev_root: str = "") -> tuple[str, ...]:
        """The device files' paths, under `dev_root` (a container's or a test's /dev) when given."""
        root = dev_root.rstrip("/")
        gpu = f"{root}/dev/nvidia{self.gpu_minor}"
        if self.gi_cap is None or self.ci_cap is None:
            return (gpu,)
        caps = f"{root}/dev/nvidia-caps/nvidia-cap"
        return (gpu, f"{caps}{self.gi_cap}", f"{caps}{self.ci_cap}")


def mig_files(minors: dict[str, int], gpu_minor: int, gi_id: int, ci_id: int) -> DeviceFiles:
    """The device files of the MIG device (GPU instance `gi_id`, compute instance `ci_id`) of a GPU."""
    gi, ci = f"gpu{gpu_minor}/gi{gi_id}/access", f"gpu{gpu_minor}/gi{gi_id}/ci{ci_id}/access"
    missing = [k for k in (gi, ci) if k not in minors]
    if missing:
        raise NotFoundError(f"the driver's mig-minors has no {' or '.join(missing)}")
    return DeviceFiles(gpu_minor, minors[gi], minors[ci])


def owner(minors: dict[str, int], files: list[str]) -> tuple[int, int | None, int | None]:
    """Which device a set of device file paths reach: (GPU minor, GPU instance, compute instance), the last two
    None for a whole GPU. Any directory prefix is allowed (a --dev-root); NotFoundError when a capability file
    is not one the driver lists."""
    by_minor = {m: name for name, m in minors.items()}
    gpu: int | None = None
    gi: int | None = None
    ci: int | None = None
    ci_gi: int | None = None
    for path in files:
        name = path.rsplit("/", 1)[-1]
        if name.startswith("nvidia-cap") and name[10:].isdigit():
            what = by_minor.get(int(name[10:]), "")
            parts = what.split("/")
            if not what.startswith("gpu") or parts[-1] != "access":
                raise NotFoundError(f"{path}: the driver's mig-minors lists no MIG instance with minor {name[10:]}")
            if len(parts) == 4:
                ci, ci_gi = int(parts[2][2:]), int(parts[1][2:])
            else:
                gi = int(parts[1][2:])
        elif name.startswith("nvidia") and name[6:].isdigit():
            gpu = int(name[6:])
    if gpu is None:
        raise NotFoundError(f"no /dev/nvidia<N> among {', '.join(files)}")
    if (gi is None) != (ci is None):
        raise NotFoundError(f"{', '.join(files)}: a MIG device needs both its GPU-instance and compute-instance files")
    if ci_gi is not None and ci_gi != gi:
        raise NotFoundError(f"{', '.join(files)}: the compute instance is not in the GPU instance")
    return gpu, gi, ci
