"""`Compute(cpus=, memory_gb=)` on this machine: what it asks of it, checked before anything starts."""

from __future__ import annotations

import os

from ...errors import PluginError


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_gb() -> float:
    """This machine's physical memory, in GB (10^9 bytes, as the reference counts a machine's memory_gb)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise PluginError(f"{name} must be a number > 0 (or None), not {value!r}")
    return float(value)


def check_machine(cpus: int | None, memory: float | None) -> None:
    """Refuse, in one line, what this machine cannot give: more CPUs than this process may use, more memory than
    the machine has."""
    if cpus is not None:
        have = usable_cpus()
        if _number("cpus", cpus) > have:
            raise PluginError(
                f"cpus={cpus}, but this machine gives this process {have}: ask for at most {have}, or run on a "
                "bigger machine (a Ray pool: provider=migpool.Ray(...))"
            )
    if memory is not None:
        total = memory_gb()
        if _number("memory_gb", memory) > total:
            raise PluginError(
                f"memory_gb={memory}, but this machine has {total:.1f} GB: ask for at most {int(total)}, or run "
                "on a bigger machine (a Ray pool: provider=migpool.Ray(...))"
            )
