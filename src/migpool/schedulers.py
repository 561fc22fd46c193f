"""What the schedulers that hand out partitions should be told about a layout: Slurm and Kubernetes.

Slurm (GRES, https://slurm.schedmd.com/gres.html): a MIG device is a `gpu` GRES whose type is the profile name
(`gpu:3g.40gb:2`); with `AutoDetect=nvml` in gres.conf slurmd finds the MIG devices itself (Slurm built with
NVML), so slurm.conf only declares the counts.

Kubernetes (NVIDIA device plugin): the `mixed` strategy advertises one resource per profile
(`nvidia.com/mig-3g.40gb`); media-extension profiles count under their base profile (the plugin does not tell
`1g.10gb+me` from `1g.10gb`). The `single` strategy advertises MIG devices as `nvidia.com/gpu` and needs every
GPU of the node to be MIG-enabled with one profile everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .layout import Layout


def _base(profile: str) -> str:
    return profile.removesuffix("+me")


def _totals(per_gpu: Sequence[tuple[int, Layout]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _, layout in per_gpu:
        for name, n in layout.counts if layout.mig_enabled else ():
            totals[name] = totals.get(name, 0) + n
    return totals


def slurm(per_gpu: Sequence[tuple[int, Layout]], node_name: str) -> str:
    """gres.conf and slurm.conf lines for this node's layout."""
    whole = [i for i, layout in per_gpu if not layout.mig_enabled]
    items = [f"gpu:{name}:{n}" for name, n in _totals(per_gpu).items()] + ([f"gpu:{len(whole)}"] if whole else [])
    described = [
        f"#   GPU {i}: "
        + (
            ", ".join(f"{n}x {name}" for name, n in layout.counts) or "MIG enabled, no partitions"
            if layout.mig_enabled
            else "MIG disabled: one whole GPU (untyped)"
        )
        for i, layout in per_gpu
    ]
    return "\n".join(
        [
            "# gres.conf on this node: slurmd finds the MIG devices through NVML (Slurm built with NVML)",
            "AutoDetect=nvml",
            "",
            "# slurm.conf: the node's GRES, one type per MIG profile",
            *described,
            "GresTypes=gpu",
            f"NodeName={node_name} Gres={','.join(items)}" if items else f"# NodeName={node_name}: no GPU to declare",
            "",
        ]
    )


@dataclass(frozen=True)
class K8sView:
    mixed: dict[str, int]
    single: dict[str, int] | None
    single_reason: str


def kubernetes(per_gpu: Sequence[tuple[int, Layout]]) -> K8sView:
    """The resources the NVIDIA device plugin advertises for this layout under each MIG strategy."""
    mixed: dict[str, int] = {}
    whole = sum(1 for _, layout in per_gpu if not layout.mig_enabled)
    if whole:
        mixed["nvidia.com/gpu"] = whole
    for name, n in _totals(per_gpu).items():
        key = f"nvidia.com/mig-{_base(name)}"
        mixed[key] = mixed.get(key, 0) + n
    profiles = {_base(name) for _, layout in per_gpu if layout.mig_enabled for name, _ in layout.counts}
    enabled = [i for i, layout in per_gpu if layout.mig_enabled]
    if not enabled:
        return K8sView(mixed, {"nvidia.com/gpu": whole}, "no GPU has MIG enabled: whole GPUs")
    if whole:
        return K8sView(
            mixed,
            None,
            f"GPU(s) {', '.join(str(i) for i, lay in per_gpu if not lay.mig_enabled)} have MIG "
            "disabled while others have it enabled; the single strategy needs every GPU "
            "MIG-enabled with one profile. Use the mixed strategy",
        )
    if len(profiles) != 1:
        return K8sView(
            mixed,
            None,
            f"the partitions have {len(profiles)} profiles ({', '.join(sorted(profiles))}); "
            "the single strategy needs one profile on every GPU. Use the mixed strategy",
        )
    empty = [i for i, layout in per_gpu if layout.mig_enabled and not layout.counts]
    if empty:
        return K8sView(mixed, None, f"GPU(s) {', '.join(map(str, empty))} have MIG enabled but no partitions")
    (profile,) = profiles
    return K8sView(
        mixed, {"nvidia.com/gpu": sum(_totals(per_gpu).values())}, f"every GPU holds only {profile} partitions"
    )
