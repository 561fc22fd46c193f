"""Which partition size to make for a task that asks for memory, not a profile: learned from measured run times.

Tasks are grouped by function and memory need. For each group migpool keeps how long its tasks took on each
profile: a moving average of the runs after a worker's first run of the function (the first may pay for loading
it). A first run is only an upper bound of the run time, so it counts where no later run is measured yet and
only to make its profile look good, never bad: a size that is already fast on its first run is taken up at once,
and one whose first run was slow is tried again. A profile's cost is its run time × its compute slices:
slice-seconds per task. The profiles within `TIE` of the cheapest are preferred, the fastest first: a larger
partition is chosen only when the task runs faster on it in proportion to its slices (or nearly). The smallest
profile that holds the memory and the next larger size are tried first; each next larger size is tried once,
while the largest one measured so far is still among the preferred.

A checkpoint task (task.Checkpoint, with `done=`) is timed per unit of its work between checkpoints instead:
what each size does per unit, whatever the task's length (two runs of one function may differ a hundredfold in
length; their speed per unit does not). Where a group has such figures, they rank its sizes. The time a move
took (from the pause until the task goes on elsewhere, beyond its own work) is kept per group too.

Figures are kept from one pool to the next (pool/remembered.py) under a name for each function that stays the
same while its code does, so a pool that runs the same functions again starts from what the last one learned.
"""

from __future__ import annotations

import hashlib
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...mig.catalog import Profile

TIE = 0.10  # costs within 10% of the cheapest count as equal
ALPHA = 0.3  # weight of the newest run in the moving average
UNIT = "/unit"  # in a remembered group's figures: seconds per unit of work on the profile before it
MOVE = "move"  # in a remembered group's figures: seconds a move costs

Key = tuple[int, float]  # (function id, memory need in MiB; 0 for a task that asks for nothing)
Named = dict[tuple[str, float], dict[str, float]]  # (function name, memory need) -> {profile: seconds per task}


def function_name(fn: Callable[..., Any]) -> str | None:
    """A name for `fn` that is the same in every run while its code is: module, qualified name and a digest of
    its code. None for a callable without code of its own (a partial, a builtin)."""
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    h = hashlib.sha256()
    _digest(code, h)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}:{h.hexdigest()[:16]}"


def _digest(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _digest(c, h)
        else:  # a frozenset's order varies from run to run (string hashing): sort it
            h.update(repr(sorted(map(repr, c)) if isinstance(c, frozenset) else c).encode())


@dataclass(frozen=True)
class Choice:
    """The profiles to make for a group of tasks: `explore` (to be tried once, only where it fits without
    freeing anything), then `ranked`, best first."""

    explore: Profile | None
    ranked: tuple[Profile, ...]


class RunTimes:
    def __init__(self, known: Named | None = None) -> None:
        """`known`: figures an earlier pool learned, by function name; a function takes them up once it is named."""
        self._lock = threading.RLock()
        self._mean: dict[Key, dict[str, float]] = {}
        self._first: dict[Key, dict[str, float]] = {}  # the fastest first run on each profile: an upper bound
        self._unit: dict[Key, dict[str, float]] = {}  # checkpoint tasks: seconds per unit of work, per profile
        self._move: dict[Key, float] = {}  # checkpoint tasks: seconds a move costs
        self._chosen: dict[tuple[Key, tuple[str, ...]], Choice] = {}  # cleared by every new measurement
        self._known = known or {}
        self._names: dict[int, str | None] = {}

    def name(self, fid: int, name: str | None) -> None:
        """Give function `fid` its lasting name (function_name): it starts from the figures known for it."""
        with self._lock:
            if fid in self._names:
                return
            self._names[fid] = name
            for (known, need), seconds in self._known.items():
                if known == name:
                    key = (fid, need)
                    for profile, s in seconds.items():
                        if profile == MOVE:
                            self._move.setdefault(key, s)
                        elif profile.endswith(UNIT):
                            self._unit.setdefault(key, {}).setdefault(profile.removesuffix(UNIT), s)
                        else:
                            self._mean.setdefault(key, {}).setdefault(profile, s)
            self._chosen.clear()

    def named(self) -> Named:
        """The figures of the functions that have a lasting name, by that name."""
        with self._lock:
            out: Named = {}
            for fid, need in {*self._mean, *self._unit, *self._move}:
                name = self._names.get(fid)
                if name is None:
                    continue
                key = (fid, need)
                figures = dict(self._mean.get(key, {}))
                figures |= {p + UNIT: s for p, s in self._unit.get(key, {}).items()}
                if key in self._move:
                    figures[MOVE] = self._move[key]
                if figures:
                    out[(name, need)] = figures
            return out

    def add(self, key: Key, profile: str, seconds: float, first: bool = False) -> None:
        """A task of `key` took `seconds` on `profile`; `first`: it was its worker's first run of the function."""
        with self._lock:
            if first:
                bounds = self._first.setdefault(key, {})
                bounds[profile] = min(seconds, bounds.get(profile, seconds))
            else:
                means = self._mean.setdefault(key, {})
                old = means.get(profile)
                means[profile] = seconds if old is None else (1 - ALPHA) * old + ALPHA * seconds
            self._chosen.clear()

    def add_unit(self, key: Key, profile: str, seconds: float) -> None:
        """A checkpoint task of `key` did one unit of work per `seconds` on `profile`."""
        with self._lock:
            units = self._unit.setdefault(key, {})
            old = units.get(profile)
            units[profile] = seconds if old is None else (1 - ALPHA) * old + ALPHA * seconds
            self._chosen.clear()

    def per_unit(self, key: Key) -> dict[str, float]:
        """Seconds per unit of work on each profile, for checkpoint tasks that say how far they are."""
        with self._lock:
            return dict(self._unit.get(key, {}))

    def add_move(self, key: Key, seconds: float) -> None:
        with self._lock:
            old = self._move.get(key)
            self._move[key] = seconds if old is None else (1 - ALPHA) * old + ALPHA * seconds

    def move_cost(self, key: Key) -> float | None:
        """What a move of a task of `key` cost, measured; None before the first."""
        with self._lock:
            return self._move.get(key)

    def speeds(self, key: Key) -> tuple[dict[str, float], bool]:
        """The figures that rank `key`'s sizes: seconds per unit where measured (True), else seconds per task,
        measured or a first run's bound (False)."""
        with self._lock:
            units = self._unit.get(key)
            if units:
                return dict(units), True
            return {**self.bounds(key), **self.measured(key)}, False

    def measured(self, key: Key) -> dict[str, float]:
        """The mean run time on each profile, of runs after a worker's first (first runs are not in it)."""
        with self._lock:
            return dict(self._mean.get(key, {}))

    def bounds(self, key: Key) -> dict[str, float]:
        """The fastest first run on each profile that has no later run measured: an upper bound of its run time."""
        with self._lock:
            mean = self._mean.get(key, {})
            return {n: t for n, t in self._first.get(key, {}).items() if n not in mean}

    def choose(self, key: Key, candidates: list[Profile]) -> Choice:
        """Rank `candidates` (the profiles that hold the memory) for tasks of `key`."""
        memo = (key, tuple(p.name for p in candidates))
        with self._lock:
            got = self._chosen.get(memo)
            if got is None:
                got = self._chosen[memo] = self._choose(key, candidates)
            return got

    def _choose(self, key: Key, candidates: list[Profile]) -> Choice:
        cands = sorted(candidates, key=lambda p: (p.slices, p.memory_mib))
        seconds, units = self.speeds(key)
        mean = seconds if units else self.measured(key)
        if not any(p.name in seconds for p in cands):  # try the smallest and the next size at once
            return Choice(next((p for p in cands if p.slices > cands[0].slices), None), tuple(cands))
        cost = {p.name: seconds[p.name] * p.slices for p in cands if p.name in seconds}
        cheapest = min(cost.values())  # a bound may set it: the profile's true cost is lower still
        good = sorted(
            (p for p in cands if p.name in cost and cost[p.name] <= cheapest * (1 + TIE)), key=lambda p: seconds[p.name]
        )
        worse = sorted((p for p in cands if p.name in mean and p not in good), key=lambda p: cost[p.name])
        known = good + worse  # a bound that makes its profile look worse says nothing: that profile is untried
        largest = max(known, key=lambda p: (p.slices, p.memory_mib))
        explore = None
        if largest in good:
            explore = next((p for p in cands if p.slices > largest.slices and p not in known), None)
        untried = [p for p in cands if p not in known and p is not explore]
        return Choice(explore, tuple(known + untried))
