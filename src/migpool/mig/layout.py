"""What a user asks for on one GPU: profile counts, or a need (N partitions of at least M memory)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError, LayoutError
from .catalog import (
    ComputeProfile,
    DeviceProfile,
    GpuModel,
    Profile,
    ProfileName,
    profiles_holding,
    warn_if_estimated,
)

_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory_mib(text: str | int | float) -> float:
    """'10GB' (decimal) / '16GiB' / '10240MiB' / a number of MiB -> MiB."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _MEM.match(str(text))
    if not m:
        raise LayoutError(f"cannot read memory size {text!r}; write e.g. '10GB', '16GiB' or '10240MiB'")
    unit = (m.group(2) or "mib").lower()
    return float(m.group(1)) * _UNITS[unit] / 2**20


OFF = "off"  # the layout of a GPU without MIG (a whole GPU), as `apply` takes it; mig-parted's `mig-enabled: false`


@dataclass(frozen=True)
class Layout:
    """A desired layout for one GPU: either `counts` ({profile: n}) or a need (`partitions`, `min_memory`)."""

    counts: tuple[tuple[str, int], ...] = ()
    partitions: int | None = None
    min_memory: str | None = None
    mig_enabled: bool = True

    @classmethod
    def of(cls, spec: Layout | Mapping[str, int] | str | None = None, **need: object) -> Layout:
        """Build a Layout from a dict, a string ('3g.40gb:2,1g.10gb:1'), or partitions=/min_memory=."""
        if isinstance(spec, Layout):
            return spec
        if need:
            unknown = set(need) - {"partitions", "min_memory"}
            if unknown:
                raise LayoutError(f"unknown layout option(s) {sorted(unknown)}; valid: partitions, min_memory")
            parts = need.get("partitions")
            if not isinstance(parts, int) or parts < 1:
                raise LayoutError(f"partitions must be a positive integer, got {parts!r}")
            mm = need.get("min_memory")
            if mm is not None:
                parse_memory_mib(str(mm))  # validate early
            return cls(partitions=parts, min_memory=None if mm is None else str(mm))
        if spec is None:
            return cls()
        if isinstance(spec, str):
            if spec.strip().lower() == OFF:
                return cls(mig_enabled=False)
            return cls(counts=tuple(parse_counts(spec)))
        items = []
        for k, v in dict(spec).items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise LayoutError(f"count for {k!r} must be a non-negative integer, got {v!r}")
            if v:
                items.append((str(k), v))
        return cls(counts=tuple(items))

    def devices(self, gpu: GpuModel) -> list[tuple[DeviceProfile, int]]:
        """The MIG devices this layout asks for on `gpu`, by device profile (ProfileError for unknown profiles)."""
        if not self.mig_enabled:
            return []
        if self.partitions is not None:
            p = choose_profile(gpu, self.partitions, self.min_memory)
            return [(DeviceProfile(p, p.whole), self.partitions)]
        merged: dict[DeviceProfile, int] = {}
        for name, n in self.counts:
            d = gpu.device(name)
            merged[d] = merged.get(d, 0) + n
        return sorted(merged.items(), key=lambda dn: (-dn[0].gi.memory_slices, -dn[0].gi.slices, dn[0].name))

    def shapes(self, gpu: GpuModel) -> list[tuple[Profile, tuple[ComputeProfile, ...]]]:
        """The GPU instances this layout makes on `gpu`, each with the compute instances it holds (pack()); [] for
        a count beyond what any GPU of the model holds (resolve() passes that on for the planner to refuse)."""
        devices = self.devices(gpu)
        return [] if _beyond(devices) else pack(devices)

    def resolve(self, gpu: GpuModel) -> list[tuple[Profile, int]]:
        """The GPU-instance profiles and counts this layout means on `gpu` (ProfileError for unknown profiles). A
        count beyond what any GPU of the model holds is passed on as it is, unpacked: the planner refuses it with
        what fits, before anything is expanded."""
        devices = self.devices(gpu)
        merged: dict[Profile, int] = {}
        if _beyond(devices):
            for d, n in devices:
                merged[d.gi] = merged.get(d.gi, 0) + -(-n // d.ci.instances)
        else:
            for p, _ in pack(devices):
                merged[p] = merged.get(p, 0) + 1
        return sorted(merged.items(), key=lambda pn: (-pn[0].memory_slices, -pn[0].slices, pn[0].name))

    def __str__(self) -> str:
        if not self.mig_enabled:
            return "mig disabled"
        if self.partitions is not None:
            extra = f", min_memory={self.min_memory}" if self.min_memory else ""
            return f"partitions={self.partitions}{extra}"
        return ",".join(f"{n}:{c}" for n, c in self.counts) or "(no instances)"


def pack(devices: list[tuple[DeviceProfile, int]]) -> list[tuple[Profile, tuple[ComputeProfile, ...]]]:
    """GPU instances holding these MIG devices, grouped as NVIDIA's mig-parted groups them: the devices in its
    order (more GPU-instance slices first, then more compute slices, then attributes), each compute instance put
    in the GPU instance made just before it where it fits there (same profile, a free start), else in a new one.
    `1c.3g.40gb: 4` is one 3g.40gb GPU instance with three 1-slice compute instances and a second one with one."""
    flat = [d for d, n in devices for _ in range(n)]
    flat.sort(key=lambda d: d.gi.name)
    flat.sort(key=_attributes, reverse=True)
    flat.sort(key=lambda d: (-d.gi.slices, -d.ci.slices))  # (stable: the orders above break its ties)
    shapes: list[tuple[Profile, list[ComputeProfile]]] = []
    for d in flat:
        if shapes and shapes[-1][0] == d.gi and d.gi.place_compute([*shapes[-1][1], d.ci]) is not None:
            shapes[-1][1].append(d.ci)
        else:
            shapes.append((d.gi, [d.ci]))
    return [(gi, tuple(cis)) for gi, cis in shapes]


def _beyond(devices: list[tuple[DeviceProfile, int]]) -> bool:
    """A count beyond what any GPU of the model holds (never expanded: it could be 10**18)."""
    return any(n > d.gi.max_instances * d.ci.instances for d, n in devices)


def _attributes(d: DeviceProfile) -> str:
    parsed = ProfileName.parse(d.gi.name)
    return ",".join(parsed.attrs) if parsed else ""


def parse_counts(text: str) -> list[tuple[str, int]]:
    """'3g.40gb:2,1g.10gb' -> [('3g.40gb', 2), ('1g.10gb', 1)]."""
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, count = part.rpartition(":") if ":" in part else (part, "", "1")
        name = name.strip()
        if not name or not count.strip().isdigit():
            raise ConfigError(f"cannot read layout item {part!r}; write PROFILE[:COUNT], e.g. '3g.40gb:2,1g.10gb:1'")
        out.append((name, int(count)))
    if not out:
        raise ConfigError("empty layout; write PROFILE[:COUNT], e.g. '3g.40gb:2'")
    return out


def auto_profiles(gpu: GpuModel) -> list[Profile]:
    """Profiles eligible when migpool picks one itself (no media-extension, graphics or other variants)."""
    return [p for p in gpu.profiles if p.plain]


def choose_profile(gpu: GpuModel, partitions: int, min_memory: str | None = None) -> Profile:
    """The largest profile that still gives `partitions` instances of at least `min_memory`."""
    need = parse_memory_mib(min_memory) if min_memory is not None else 0.0
    if min_memory is not None:
        warn_if_estimated(gpu)
    holding = profiles_holding(gpu, need)
    fitting = [p for p in holding if p.max_instances >= partitions]
    if not fitting:
        best = max((p.max_instances for p in holding), default=0)
        raise LayoutError(
            f"{gpu.name} cannot hold {partitions} partitions"
            + (f" of at least {min_memory}" if min_memory else "")
            + f": at most {best} fit with that memory. "
            + "Profiles (max instances): "
            + ", ".join(f"{p.name} (×{p.max_instances})" for p in auto_profiles(gpu))
        )
    return max(fitting, key=lambda p: (p.memory_mib, p.slices, p.sms))


@dataclass(frozen=True)
class GpuLayout:
    """A Layout aimed at some GPUs of a machine: `gpus` is 'all' or a tuple of indices."""

    layout: Layout
    gpus: str | tuple[int, ...] = "all"

    def selects(self, index: int) -> bool:
        return self.gpus == "all" or index in self.gpus


@dataclass(frozen=True)
class MachineLayout:
    """Desired layouts for a machine's GPUs, in order; a later entry wins for a GPU it also names."""

    entries: tuple[GpuLayout, ...] = field(default_factory=tuple)
    uncovered: tuple[int, ...] = ()  # GPUs that the mig-parted config it came from leaves out (its assert fails)

    @classmethod
    def of(
        cls, spec: MachineLayout | Layout | Mapping[str, int] | str, gpus: str | tuple[int, ...] = "all"
    ) -> MachineLayout:
        if isinstance(spec, MachineLayout):
            return spec
        return cls((GpuLayout(Layout.of(spec), gpus),))

    def for_gpu(self, index: int) -> Layout | None:
        chosen = None
        for e in self.entries:
            if e.selects(index):
                chosen = e.layout
        return chosen
