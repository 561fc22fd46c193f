"""Every maximal layout of one GPU model, for the benchmarks' best-static searches (dynamic.py, miso.py)."""

from __future__ import annotations

from migpool.errors import LayoutError
from migpool.mig.catalog import GpuModel
from migpool.mig.planner import plan


def maximal_layouts(gpu: GpuModel) -> list[tuple[str, ...]]:
    """Every layout of `gpu`'s plain profiles to which no partition can be added, as sorted profile names. A
    layout counts as placeable when the planner finds placements for all of it, over every placement it could
    take (a 3g.20gb placed at the start of an A100 leaves no room for a 4g.20gb; placed at the end, it does)."""
    names = sorted(p.name for p in gpu.profiles if p.plain)
    placeable: dict[tuple[str, ...], bool] = {(): True}

    def fits(layout: tuple[str, ...]) -> bool:
        if layout not in placeable:
            try:
                plan(gpu, {n: layout.count(n) for n in set(layout)})
                placeable[layout] = True
            except LayoutError:
                placeable[layout] = False
        return placeable[layout]

    found: list[tuple[str, ...]] = []

    def grow(current: tuple[str, ...]) -> None:
        if not any(fits(tuple(sorted((*current, n)))) for n in names):
            found.append(current)
            return
        for n in names:
            if (not current or n >= current[-1]) and fits((*current, n)):
                grow((*current, n))

    grow(())
    return sorted(found)
