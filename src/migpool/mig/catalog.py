"""The GPU catalog: MIG-capable GPU models, their profiles and placements (data in data/catalog.json).

A user catalog (`migpool catalog check --save` writes it, in the user config dir or $MIGPOOL_CONFIG_DIR)
holds tables read from real GPUs; its models replace the shipped ones of the same key.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir

from ..errors import CatalogError, EstimateWarning, ProfileError

__all__ = [
    "CONFIG_DIR_ENV",
    "USER_SOURCE",
    "ProfileName",
    "Placement",
    "parse_placements",
    "format_placements",
    "ComputeProfile",
    "Profile",
    "DeviceProfile",
    "GpuModel",
    "compute_profiles",
    "model_to_raw",
    "user_catalog_path",
    "models",
    "reload",
    "save_user_model",
    "source_text",
    "estimate_note",
    "warn_if_estimated",
    "lookup",
    "find_by_nvml_name",
]

CONFIG_DIR_ENV = "MIGPOOL_CONFIG_DIR"
USER_SOURCE = "user"

_PLACEMENTS = re.compile(r"^\{([\d,\s]+)\}:(\d+)$")
# a MIG device profile as nvidia-smi and mig-parted write it: [<c>c.]<g>g.<gb>gb[+attr,...|-attr,...]
_PROFILE_NAME = re.compile(
    r"^(?:(\d+)c\.)?(\d+)g\.(\d+)gb(?:([+-])([a-zA-Z.][a-zA-Z0-9.]*(?:,[a-zA-Z.][a-zA-Z0-9.]*)*))?$"
)
_MIG_PREFIX = re.compile(r"^mig[\s-]+", re.IGNORECASE)


@dataclass(frozen=True)
class ProfileName:
    """A MIG device profile's name taken apart: compute slices, GPU-instance slices, memory in the name's GB, and
    the attributes after '+' (media extensions 'me', 'me.all', graphics 'gfx') or '-' ('me': none)."""

    c: int
    g: int
    gb: int
    attrs: tuple[str, ...] = ()
    without: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ProfileName | None:
        """mig-parted's own reading (go-nvlib's parseMigProfile): exact spelling, lower case, no 'MIG ' prefix;
        None where it refuses the text."""
        return _parse_profile_name(text)

    @classmethod
    def read(cls, text: str) -> ProfileName | None:
        """parse() without its cache."""
        m = _PROFILE_NAME.match(text)
        if not m:
            return None
        g, gb = int(m.group(2)), int(m.group(3))
        c = int(m.group(1)) if m.group(1) else g
        attrs = tuple(m.group(5).split(",")) if m.group(5) else ()
        if len(set(attrs)) != len(attrs) or any(a.startswith(".") or a.endswith(".") for a in attrs):
            return None
        plus = m.group(4) == "+"
        return cls(c, g, gb, tuple(sorted(attrs)) if plus else (), () if plus else tuple(sorted(attrs)))

    @property
    def gi(self) -> ProfileName:
        return ProfileName(self.g, self.g, self.gb, self.attrs, self.without)

    def __str__(self) -> str:
        suffix = "+" + ",".join(self.attrs) if self.attrs else "-" + ",".join(self.without) if self.without else ""
        head = f"{self.g}g.{self.gb}gb" if self.c == self.g else f"{self.c}c.{self.g}g.{self.gb}gb"
        return head + suffix


@lru_cache(maxsize=4096)
def _parse_profile_name(text: str) -> ProfileName | None:
    """ProfileName.parse, kept: the same few names are read again and again (dynamic MIG's every step)."""
    return ProfileName.read(text)


def _hash_once(self: Any) -> int:
    """A frozen dataclass's hash, computed on first use and kept: the planner's memo hashes whole GPU models and
    their profiles on every call. Kept out of pickles (_no_hash_state): a string's hash differs between processes."""
    try:
        return self.__dict__["_hash"]
    except KeyError:
        h = hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare))
        object.__setattr__(self, "_hash", h)
        return h


def _no_hash_state(self: Any) -> dict[str, Any]:
    return {k: v for k, v in self.__dict__.items() if k != "_hash"}


@dataclass(frozen=True)
class Placement:
    """Where a GPU instance sits: `size` memory slices from `start` (as `nvidia-smi mig -lgipp` prints)."""

    start: int
    size: int

    @property
    def slots(self) -> frozenset[int]:
        return frozenset(range(self.start, self.start + self.size))

    def overlaps(self, other: Placement) -> bool:
        return self.start < other.start + other.size and other.start < self.start + self.size

    def __str__(self) -> str:
        return f"{self.start}:{self.size}"


def parse_placements(text: str) -> tuple[Placement, ...]:
    """Parse `{0,2,4}:2` (the -lgipp notation) into placements."""
    m = _PLACEMENTS.match(text.strip())
    if not m:
        raise ValueError(f"bad placement notation {text!r}; expected e.g. '{{0,2,4}}:2'")
    size = int(m.group(2))
    return tuple(Placement(int(s), size) for s in m.group(1).split(","))


def format_placements(placements: tuple[Placement, ...]) -> str:
    starts = ",".join(str(p.start) for p in placements)
    return f"{{{starts}}}:{placements[0].size}" if placements else "{}:0"


@dataclass(frozen=True)
class ComputeProfile:
    """A compute-instance profile inside a GPU-instance profile, e.g. `1c.3g.40gb` (the whole GI's: `3g.40gb`).
    At most `instances` fit in one GI; each takes `slices` contiguous compute slices of the GI's `gi_slices`."""

    name: str
    slices: int
    sms: int
    nvml_index: int = 0
    instances: int = 1
    gi_slices: int = 0

    @property
    def starts(self) -> tuple[int, ...]:
        """Where in its GI it can start (compute slices)."""
        return tuple(range(max(self.gi_slices, self.slices) - self.slices + 1))


@dataclass(frozen=True)
class Profile:
    """A GPU-instance profile of one GPU model."""

    name: str
    id: int
    nvml_index: int
    slices: int
    memory_mib: int
    sms: int
    max_instances: int
    placements: tuple[Placement, ...]
    compute_profiles: tuple[ComputeProfile, ...] = ()
    media: dict[str, int] = field(default_factory=dict, compare=False)

    __hash__ = _hash_once
    __getstate__ = _no_hash_state

    @property
    def memory_slices(self) -> int:
        return self.placements[0].size

    @property
    def plain(self) -> bool:
        """No attribute in its name (`+me`, `+gfx`, `-me`, `+me.all`): a profile migpool may choose by itself."""
        parsed = ProfileName.parse(self.name)
        return parsed is not None and not parsed.attrs and not parsed.without

    @property
    def whole(self) -> ComputeProfile:
        """The compute instance that takes the whole GPU instance (what a partition of this profile is)."""
        return self.compute(self.slices)

    def place_compute(
        self, cis: Sequence[ComputeProfile], there: Sequence[tuple[ComputeProfile, int]] = ()
    ) -> tuple[int, ...] | None:
        """Where compute instances `cis`, made in this order, start inside one GPU instance of this profile that
        already holds `there` (compute instances and their starts): each at its lowest free start, as the driver
        places them; None where they do not all fit."""
        taken = {k for c, at in there for k in range(at, at + c.slices)}
        starts = []
        every = [*cis, *(c for c, _ in there)]
        for c in cis:
            if sum(1 for x in every if x == c) > c.instances:
                return None
            free = next((s for s in c.starts if not taken & set(range(s, s + c.slices))), None)
            if free is None:
                return None
            taken |= set(range(free, free + c.slices))
            starts.append(free)
        return tuple(starts)

    def compute(self, slices: int) -> ComputeProfile:
        for c in self.compute_profiles:
            if c.slices == slices:
                return c
        offered = ", ".join(c.name for c in self.compute_profiles)
        raise ProfileError(f"{self.name} offers no {slices}-slice compute instance; it offers {offered}")

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class DeviceProfile:
    """What one MIG device is: a compute instance (`ci`) inside a GPU instance of profile `gi`. A partition of a
    GPU-instance profile is its whole compute instance (`3g.40gb`); `1c.3g.40gb` is one of three 1-slice compute
    instances that share a 3g.40gb GPU instance's memory and L2 cache."""

    gi: Profile
    ci: ComputeProfile

    @property
    def name(self) -> str:
        return self.ci.name

    @property
    def whole(self) -> bool:
        return self.ci.slices == self.gi.slices

    @property
    def memory_mib(self) -> int:
        """The memory this device sees: its GPU instance's (shared with sibling compute instances)."""
        return self.gi.memory_mib

    @property
    def sms(self) -> int:
        return self.ci.sms

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class GpuModel:
    """A MIG-capable GPU model from the catalog (or read from a real GPU)."""

    key: str
    nvml_names: tuple[str, ...]
    memory_mib: int
    sms: int
    compute_slices: int
    memory_slices: int
    profiles: tuple[Profile, ...]
    aliases: tuple[str, ...] = ()
    source: str = ""
    pci_device_ids: tuple[int, ...] = ()
    estimated: tuple[str, ...] = ()  # fields that are estimates, not read from such a GPU ("memory_mib", "sms")
    architecture: str = ""  # "ampere", "hopper", "blackwell"

    __hash__ = _hash_once
    __getstate__ = _no_hash_state

    @property
    def has_gpm(self) -> bool:
        """Whether the GPU has GPM, NVML's per-GPU-instance activity counters (Hopper and later)."""
        return self.architecture in ("hopper", "blackwell")

    @property
    def memory_estimated(self) -> bool:
        return "memory_mib" in self.estimated

    @property
    def name(self) -> str:
        return self.nvml_names[0] if self.nvml_names else self.key

    def profile(self, spec: str | int | Profile) -> Profile:
        """Resolve a GPU-instance profile: `3g.40gb`, `MIG 3g.40gb`, `3G.40GB`, `9` or 9, or raise ProfileError."""
        if isinstance(spec, Profile):
            if spec in self.profiles:
                return spec
            spec = spec.name
        for p in self.profiles:  # the usual case, exactly a profile's name, at once
            if p.name == spec:
                return p
        d = self.device(spec)
        if d.ci.slices != d.gi.slices:
            raise ProfileError(
                f"'{spec}' is a compute-instance profile inside {d.gi.name}; a GPU-instance profile is wanted here"
            )
        return d.gi

    def device(self, spec: str | int | Profile | DeviceProfile) -> DeviceProfile:
        """Resolve a MIG device profile, forgivingly (the CLI's and Python's spelling): a GPU-instance profile
        (`3g.40gb`, its id, `MIG 3G.40GB`) or a compute instance inside one (`1c.3g.40gb`), or raise ProfileError."""
        if isinstance(spec, DeviceProfile):
            return self.device(spec.name)
        if isinstance(spec, Profile):
            spec = spec.name
        text = str(spec).strip()
        if re.fullmatch(r"\d+", text):
            for p in self.profiles:
                if p.id == int(text):
                    return DeviceProfile(p, p.whole)
            ids = ", ".join(f"{p.id} ({p.name})" for p in self.profiles)
            raise ProfileError(f"profile id {text} is not a profile of {self.name}; valid ids: {ids}")
        found = self.device_named(_MIG_PREFIX.sub("", text).lower())
        if found is None:
            raise ProfileError(self._unknown(text))
        return found

    def device_named(self, name: str) -> DeviceProfile | None:
        """The device profile with exactly this name as mig-parted reads it (`1c.3g.40gb`, `1g.10gb+me`,
        `1c.1g.10gb+me` for the same; no 'MIG ' prefix, no capitals, no ids), or None."""
        want = ProfileName.parse(name)
        if want is None:
            return None
        for p in self.profiles:
            if ProfileName.parse(p.name) == want.gi:
                for c in p.compute_profiles:
                    if c.slices == want.c:
                        return DeviceProfile(p, c)
        return None

    @property
    def devices(self) -> tuple[DeviceProfile, ...]:
        """Every MIG device profile: each GPU-instance profile and each compute instance it offers."""
        return tuple(DeviceProfile(p, c) for p in self.profiles for c in p.compute_profiles)

    def _unknown(self, text: str) -> str:
        names = [p.name for p in self.profiles]
        wanted = _MIG_PREFIX.sub("", text).lower()
        parsed = ProfileName.parse(wanted)
        close = [self._nearest(parsed)] if parsed is not None and parsed.c == parsed.g else []
        close = close or difflib.get_close_matches(wanted, [d.name for d in self.devices], n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if parsed is not None and parsed.c != parsed.g:
            gi = next((p for p in self.profiles if ProfileName.parse(p.name) == parsed.gi), None)
            if gi is not None:
                offered = ", ".join(c.name for c in gi.compute_profiles)
                return f"'{text}' is not a compute instance {gi.name} offers{hint}; valid: {offered}."
        return f"'{text}' is not a profile of {self.name}{hint}; valid: {', '.join(names)}."

    def _nearest(self, want: ProfileName) -> str:
        """The profile closest to a name that is not one: of the same compute slices where there is one, nearest in
        memory, without attributes before with (`1g.5gb` on an A100-80GB: `1g.10gb`)."""
        named = [(p, ProfileName.parse(p.name)) for p in self.profiles]
        same = [(p, n) for p, n in named if n is not None and n.g == want.g] or [(p, n) for p, n in named if n]
        best = min(same, key=lambda pn: (abs(pn[1].gb - want.gb) if pn[1] else 0, bool(pn[1] and pn[1].attrs)))
        return best[0].name

    def __str__(self) -> str:
        return self.name


def compute_profiles(gi_name: str, slices: int, sms: int) -> tuple[ComputeProfile, ...]:
    """The compute-instance profiles a GPU instance of `slices` compute slices offers (the catalog's table, the
    same on every model), named after its profile `gi_name`."""
    table = _raw()["compute_instance_profiles"]
    offered = table.get(str(slices)) or [dict(slices=slices, nvml_index=0, instances=1)]
    return tuple(
        ComputeProfile(
            name=gi_name if c["slices"] == slices else f"{c['slices']}c.{gi_name}",
            slices=c["slices"],
            sms=sms * c["slices"] // slices,
            nvml_index=c["nvml_index"],
            instances=c["instances"],
            gi_slices=slices,
        )
        for c in offered
    )


def profiles_holding(model: GpuModel, need_mib: float) -> list[Profile]:
    """The GPU-instance profiles of `model` with at least `need_mib` MiB of memory, in the catalog's order; no
    +me variants (their size is their base profile's)."""
    return [p for p in model.profiles if p.memory_mib >= need_mib and p.plain]


def smallest_holding(models: Iterable[GpuModel], need_mib: float) -> Profile | None:
    """The smallest profile (by memory, then compute slices) of these models with at least `need_mib` MiB, or None
    where none has that much."""
    fits = [p for m in models for p in profiles_holding(m, need_mib)]
    return min(fits, key=lambda p: (p.memory_mib, p.slices)) if fits else None


def _load_model(raw: dict) -> GpuModel:
    profiles = []
    for p in raw["profiles"]:
        cps = compute_profiles(p["name"], p["slices"], p["sms"])
        media = {k: p[k] for k in ("decoders", "encoders", "copy_engines", "jpeg", "ofa") if k in p}
        profiles.append(
            Profile(
                name=p["name"],
                id=p["id"],
                nvml_index=p["nvml_index"],
                slices=p["slices"],
                memory_mib=p["memory_mib"],
                sms=p["sms"],
                max_instances=p["max_instances"],
                placements=parse_placements(p["placements"]),
                compute_profiles=cps,
                media=media,
            )
        )
    return GpuModel(
        key=raw["key"],
        nvml_names=tuple(raw["nvml_names"]),
        memory_mib=raw["memory_mib"],
        sms=raw["sms"],
        compute_slices=raw["compute_slices"],
        memory_slices=raw["memory_slices"],
        profiles=tuple(profiles),
        aliases=tuple(raw.get("aliases", ())),
        source=raw.get("source", ""),
        pci_device_ids=tuple(int(x, 16) for x in raw.get("pci_device_ids", ())),
        estimated=tuple(raw.get("estimated", ())),
        architecture=raw.get("architecture", ""),
    )


def model_to_raw(model: GpuModel) -> dict[str, Any]:
    """A model as a catalog row (the inverse of loading one)."""
    return dict(
        key=model.key,
        pci_device_ids=[f"0x{x:08X}" for x in model.pci_device_ids],
        aliases=list(model.aliases),
        nvml_names=list(model.nvml_names),
        memory_mib=model.memory_mib,
        sms=model.sms,
        compute_slices=model.compute_slices,
        memory_slices=model.memory_slices,
        source=model.source,
        architecture=model.architecture,
        **({"estimated": list(model.estimated)} if model.estimated else {}),
        profiles=[
            dict(
                name=p.name,
                id=p.id,
                nvml_index=p.nvml_index,
                slices=p.slices,
                memory_mib=p.memory_mib,
                sms=p.sms,
                max_instances=p.max_instances,
                placements=format_placements(p.placements),
                **p.media,
            )
            for p in model.profiles
        ],
    )


def user_catalog_path() -> Path:
    """Where `migpool catalog check --save` keeps tables read from this machine's GPUs."""
    return Path(os.environ.get(CONFIG_DIR_ENV) or user_config_dir("migpool")) / "catalog.json"


def _shipped() -> dict[str, Any]:
    return json.loads(resources.files("migpool.mig").joinpath("data/catalog.json").read_text())


def _user_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise TypeError("it is not an object whose 'models' is a list")
        rows = data["models"]
        if not all(isinstance(r, dict) and isinstance(r.get("key"), str) for r in rows):
            raise TypeError("a row of 'models' is not an object with a 'key'")
        return rows
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CatalogError(
            f"the user catalog {path} cannot be read ({e}); delete it, then run "
            "`migpool catalog check --save` on the GPU again"
        ) from None


@cache
def _raw() -> dict[str, Any]:
    raw = _shipped()
    path = user_catalog_path()
    user = _user_rows(path)
    if user:
        keys = {r["key"] for r in user}
        raw["models"] = user + [m for m in raw["models"] if m["key"] not in keys]
        raw["sources"][USER_SOURCE] = f"read from a GPU of this machine by `migpool catalog check --save` ({path})"
    return raw


@cache
def models() -> tuple[GpuModel, ...]:
    """Every GPU model in the catalog (the user catalog's first)."""
    raw = _raw()
    try:
        return tuple(_load_model(m) for m in raw["models"])
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogError(
            f"a catalog row is malformed ({e!r}); if you saved one, delete {user_catalog_path()} "
            "and run `migpool catalog check --save` again"
        ) from None


def reload() -> None:
    """Forget what was read, so the next lookup reads the catalogs again."""
    _raw.cache_clear()
    models.cache_clear()


def save_user_model(model: GpuModel) -> Path:
    """Keep a table read from a GPU in the user catalog (replacing that model's row); atomically written."""
    path = user_catalog_path()
    rows = [r for r in _user_rows(path) if r.get("key") != model.key]
    row = model_to_raw(model)
    row.update(source=USER_SOURCE, saved=datetime.date.today().isoformat())
    row.pop("estimated", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(
        {
            "about": "GPU tables read by `migpool catalog check --save`; they override migpool's "
            "shipped catalog. Delete this file to go back to it.",
            "models": [row, *rows],
        },
        indent=1,
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalog-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    reload()
    return path


def source_text(model: GpuModel) -> str:
    """The sentence that says where a model's facts come from."""
    return _raw()["sources"].get(model.source, model.source)


def estimate_note(keys: Iterable[str]) -> str:
    """One sentence naming the models whose memory figures are estimates."""
    return (
        f"the memory figures of {', '.join(sorted(set(keys)))} are estimates (NVIDIA publishes only "
        "fractions); run `migpool catalog check --save` on such a GPU to use what it reports"
    )


def warn_if_estimated(model: GpuModel, stacklevel: int = 3) -> None:
    """An EstimateWarning when an answer rests on this model's estimated memory figures."""
    if model.memory_estimated:
        warnings.warn(EstimateWarning(estimate_note([model.key]), (model.key,)), stacklevel=stacklevel)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower().removeprefix("nvidia"))


def lookup(name: str) -> GpuModel:
    """Find a model by catalog key (`A100-80GB`), alias, or the name NVML reports."""
    want = _norm(name)
    for m in models():
        if want in {_norm(x) for x in (m.key, *m.aliases, *m.nvml_names)}:
            return m
    keys = [m.key for m in models()]
    close = difflib.get_close_matches(name.upper(), keys, n=1, cutoff=0.4)
    hint = f" — did you mean '{close[0]}'?" if close else ""
    raise CatalogError(f"'{name}' is not a MIG-capable GPU in migpool's catalog{hint} known: {', '.join(keys)}")


def find_by_nvml_name(nvml_name: str) -> GpuModel | None:
    """The catalog model whose NVML name is exactly this, if any."""
    for m in models():
        if nvml_name in m.nvml_names:
            return m
    return None
