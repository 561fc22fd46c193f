"""The layout that survives a reboot: saved as a mig-parted v1 config, applied again by `migpool boot`.

MIG GPU and compute instances vanish at every reboot (MIG mode itself is kept). `apply --persist` or
`persist` writes the desired layout to /etc/migpool/config.yaml (or --config-file, $MIGPOOL_CONFIG_FILE);
the systemd unit that `install-service` writes runs `migpool boot`, which applies it through the same
checks, lock, journal and rollback as `apply`. The file is plain mig-parted v1, so mig-parted reads it too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..backend.base import Backend, GpuInfo
from ..errors import ConfigError
from ..host.safefiles import atomic_write
from ..integrations import migparted
from ..mig.layout import Layout, MachineLayout
from ..mig.planner import plan
from .state import actual_instances, device_counts, select_gpus

CONFIG_FILE_ENV = "MIGPOOL_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "/etc/migpool/config.yaml"
CONFIG_NAME = "migpool"
_HEADER = (
    "# The MIG layout `migpool boot` applies at every boot (mig-parted v1). Written by `migpool persist` or\n"
    "# `migpool apply --persist`; edit it with those commands, or by hand and check it with `migpool boot --dry-run`.\n"
)


def config_path(path: str | os.PathLike[str] | None = None, backend: Backend | None = None) -> Path:
    """The saved layout's file: `path`, else $MIGPOOL_CONFIG_FILE, else /etc/migpool/config.yaml; on a simulated
    machine, a file beside its simulated state (a simulation never writes /etc)."""
    chosen = path or os.environ.get(CONFIG_FILE_ENV)
    if chosen:
        return Path(chosen)
    state = getattr(backend, "path", None) if backend is not None and backend.kind == "simulated" else None
    return Path(state).with_suffix(".config.yaml") if state is not None else Path(DEFAULT_CONFIG_FILE)


def current_layouts(backend: Backend, gpus: Sequence[int | str] | None = None) -> list[tuple[int, Layout]]:
    """Each selected GPU's present layout: its profile counts, or MIG disabled."""
    out = []
    for g in select_gpus(backend, gpus):
        if not g.mig_current:
            out.append((g.index, Layout(mig_enabled=False)))
            continue
        out.append((g.index, Layout.of(device_counts(actual_instances(backend, g.index)))))
    return out


def exact(backend: Backend, index: int, layout: Layout) -> Layout:
    """A GPU's layout as the exact profile counts it resolves to on that GPU (what the saved file holds: a
    `--partitions` or `min_memory` layout becomes the profiles chosen for it); MIG disabled stays so."""
    if not layout.mig_enabled:
        return layout
    return Layout.of({p.name: n for p, n in layout.resolve(backend.model(index))})


def save(
    per_gpu: Sequence[tuple[int, Layout]], machine: Sequence[GpuInfo], path: str | os.PathLike[str] | None = None
) -> Path:
    """Write the layouts as the saved config, atomically (readers see the old file or the new one, never half).
    `machine`: every GPU of the machine (what `devices: all` and the device filters are written against)."""
    target = config_path(path)
    ids = {g.index: g.pci_device_id for g in machine}
    text = _HEADER + migparted.dump(CONFIG_NAME, per_gpu, [g.index for g in machine], ids)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, text)
    except OSError as e:
        raise ConfigError(
            f"cannot write the saved layout to {target}: {e.strerror or e}"
            + ("; run as root, or choose another file with --config-file" if isinstance(e, PermissionError) else "")
        ) from None
    return target


def load(backend: Backend, path: str | os.PathLike[str] | None = None) -> MachineLayout:
    """The saved layout, for this machine's GPUs; a missing, unreadable or malformed file is refused, naming it."""
    target = config_path(path, backend)
    if not target.exists():
        raise ConfigError(
            f"no saved layout at {target}: save one with `migpool persist` or `migpool apply ... --persist`"
        )
    try:
        entries = migparted.load(target, None)
    except ConfigError as e:
        raise ConfigError(f"the saved layout cannot be used: {e}") from None
    return migparted.machine_layout(entries, backend)


def placement_drift(backend: Backend, per_gpu: Sequence[tuple[int, Layout]]) -> list[str]:
    """GPUs whose partitions sit elsewhere than where `boot` would recreate them on the empty GPU (the saved
    config holds profiles and counts, as mig-parted's does; `boot` places them as the planner does)."""
    notes = []
    for index, layout in per_gpu:
        if not layout.mig_enabled or not layout.counts:
            continue
        model = backend.model(index)
        now = sorted(str(a.instance) for a in actual_instances(backend, index))
        then = sorted(str(i) for i in plan(model, layout))
        if now != then:
            notes.append(
                f"GPU {index}: boot will recreate {', '.join(then)} (now {', '.join(now)}): same profiles "
                "and counts, the planner's placements"
            )
    return notes
