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
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir

from .errors import CatalogError, EstimateWarning, ProfileError

CONFIG_DIR_ENV = "MIGPOOL_CONFIG_DIR"
USER_SOURCE = "user"

_PLACEMENTS = re.compile(r"^\{([\d,\s]+)\}:(\d+)$")
_PROFILE_NAME = re.compile(r"^(?:mig[\s-]+)?(\d+)g\.(\d+)gb(\+me)?$", re.IGNORECASE)


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
    """A compute-instance profile inside a GPU-instance profile, e.g. `1c.3g.40gb`."""

    name: str
    slices: int
    sms: int


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
    def full_name(self) -> str:
        return f"MIG {self.name}"

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
        """Resolve `3g.40gb`, `MIG 3g.40gb`, `3G.40GB`, `9` or 9 to a Profile, or raise ProfileError."""
        if isinstance(spec, Profile):
            if spec in self.profiles:
                return spec
            spec = spec.name
        text = str(spec).strip()
        if re.fullmatch(r"\d+", text):
            for p in self.profiles:
                if p.id == int(text):
                    return p
            ids = ", ".join(f"{p.id} ({p.name})" for p in self.profiles)
            raise ProfileError(f"profile id {text} is not a profile of {self.name}; valid ids: {ids}")
        m = _PROFILE_NAME.match(text)
        if m:
            canon = f"{int(m.group(1))}g.{int(m.group(2))}gb{'+me' if m.group(3) else ''}"
            for p in self.profiles:
                if p.name == canon:
                    return p
        raise ProfileError(self._unknown(text))

    def _unknown(self, text: str) -> str:
        names = [p.name for p in self.profiles]
        close = difflib.get_close_matches(text.lower().removeprefix("mig ").strip(), names, n=1, cutoff=0.5)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        return f"'{text}' is not a profile of {self.name}{hint} valid: {', '.join(names)}"

    def __str__(self) -> str:
        return self.name


def _load_model(raw: dict, ci_slices: dict[str, list[int]]) -> GpuModel:
    profiles = []
    for p in raw["profiles"]:
        cps = tuple(
            ComputeProfile(
                name=p["name"] if c == p["slices"] else f"{c}c.{p['name']}",
                slices=c,
                sms=p["sms"] * c // p["slices"],
            )
            for c in ci_slices.get(str(p["slices"]), [p["slices"]])
        )
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
    return json.loads(resources.files("migpool").joinpath("data/catalog.json").read_text())


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
    ci = {k: v for k, v in raw["compute_instance_slices"].items() if k != "about"}
    try:
        return tuple(_load_model(m, ci) for m in raw["models"])
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
