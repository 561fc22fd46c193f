"""Checks of what a real GPU reports against the catalog."""

from __future__ import annotations

from .catalog import GpuModel, find_by_nvml_name, format_placements


def compare_with_catalog(read: GpuModel) -> list[str]:
    """Field-by-field differences between a profile table read from a GPU and its catalog entry."""
    known = find_by_nvml_name(read.name)
    if known is None:
        return [
            f"{read.name} is not in the catalog: `migpool catalog check --save` keeps what it reports "
            "(plan and apply already read its table from the driver)"
        ]
    diffs = []
    a = {p.id: p for p in read.profiles}
    b = {p.id: p for p in known.profiles}
    for pid in sorted(set(a) | set(b)):
        if pid not in a:
            diffs.append(f"profile id {pid} ({b[pid].name}) is in the catalog but the GPU does not report it")
            continue
        if pid not in b:
            diffs.append(f"profile id {pid} ({a[pid].name}) is reported by the GPU but missing from the catalog")
            continue
        for f in ("name", "nvml_index", "slices", "memory_mib", "sms", "max_instances"):
            if getattr(a[pid], f) != getattr(b[pid], f):
                diffs.append(
                    f"{a[pid].name}: {f} is {getattr(a[pid], f)} on the GPU, {getattr(b[pid], f)} in the catalog"
                )
        if a[pid].placements != b[pid].placements:
            diffs.append(
                f"{a[pid].name}: placements {format_placements(a[pid].placements)} on the GPU, "
                f"{format_placements(b[pid].placements)} in the catalog"
            )
    return diffs
