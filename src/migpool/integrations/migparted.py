"""NVIDIA mig-parted's config format (version v1), read with mig-parted's own rules and written as its `export`
writes it.

version: v1
mig-configs:
  all-3g.40gb:
    - devices: all            # or a list of GPU indices
      device-filter: ["0x233010DE"]   # optional: PCI ids (device and vendor, optionally ':' subsystem) it is for
      mig-enabled: true
      mig-devices: {"3g.40gb": 2, "1c.3g.40gb": 3}

What mig-parted's parser (api/spec/v1, go-nvlib's profile parsing) refuses is refused here, with the file and
line; what it accepts is accepted. A profile is spelled exactly as mig-parted spells it (`3g.40gb`, `1c.3g.40gb`,
`1g.10gb+me`): the forgiving spellings of migpool's own CLI (`3G.40GB`, `MIG 3g.40gb`, a profile id) are not
mig-parted's, and are refused in these files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backend.base import Backend, GpuInfo
from ..errors import ConfigError, listed
from ..mig.catalog import ProfileName
from ..mig.layout import GpuLayout, Layout, MachineLayout

_ENTRY_KEYS = {"devices", "device-filter", "mig-enabled", "mig-devices"}
_TOP_KEYS = {"version", "mig-configs"}
NVIDIA_VENDOR = 0x10DE


@dataclass(frozen=True)
class DeviceId:
    """A device-filter item, as mig-parted reads it (types.NewDeviceIDFromString): a 32-bit device+vendor id,
    optionally ':' and a 32-bit subsystem device+vendor id. A text that is not a number matches no GPU (mig-parted
    accepts it and ignores the parse error)."""

    packed: int | None
    subsystem: int | None = None

    @classmethod
    def parse(cls, text: str) -> DeviceId:
        parts = text.split(":")
        if len(parts) > 2:
            return cls(None)
        primary = _go_uint(parts[0])
        sub = _go_uint(parts[1]) if len(parts) == 2 else None
        if primary is None or (len(parts) == 2 and sub is None):
            return cls(None)
        return cls(primary, sub)

    def matches(self, pci_device_id: int | None, pci_subsystem_id: int | None) -> bool:
        if self.packed is None or pci_device_id is None or self.packed != pci_device_id:
            return False
        return self.subsystem is None or self.subsystem == pci_subsystem_id


def _go_uint(text: str) -> int | None:
    """Go's strconv.ParseUint(text, 0, 32), which mig-parted reads device-filter ids with: a 0x, 0o or 0b prefix
    (or a leading 0: octal), else decimal; no sign, no spaces."""
    if not text or not text[0].isdigit():
        return None
    try:
        if text[:2].lower() in ("0x", "0o", "0b"):
            value = int(text, 0)
        elif len(text) > 1 and text[0] == "0":
            value = int(text[1:], 8) if "_" not in text else int("0o" + text[1:], 0)
        else:
            value = int(text, 10) if text.isdigit() else -1
    except ValueError:
        return None
    return value if 0 <= value < 2**32 else None


@dataclass(frozen=True)
class ConfigEntry:
    """One entry of a config: the GPUs it is for and what they get. `lines` says where each profile was written."""

    layout: Layout
    devices: str | tuple[int, ...]
    device_filter: tuple[DeviceId, ...] = ()
    source: str = "<config>"
    line: int = 0
    lines: Mapping[str, int] = field(default_factory=dict)

    def selects(self, index: int, pci_device_id: int | None, pci_subsystem_id: int | None = None) -> bool:
        """mig-parted's MatchesDeviceFilter and MatchesDevices: no filter (or an empty one) matches every GPU."""
        if self.device_filter and not any(f.matches(pci_device_id, pci_subsystem_id) for f in self.device_filter):
            return False
        return self.devices == "all" or index in self.devices

    def selects_gpu(self, g: GpuInfo) -> bool:
        return self.selects(g.index, g.pci_device_id, g.pci_subsystem_id)


def _err(node: yaml.Node, source: str, text: str) -> ConfigError:
    return ConfigError(f"{source}, line {node.start_mark.line + 1}: {text}")


def _scalar(node: yaml.Node) -> object:
    """The value a node stands for, as YAML's safe loader builds it."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _mapping(node: yaml.Node, source: str, what: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise _err(node, source, f"{what} must be a mapping")
    last: dict[str, tuple[yaml.ScalarNode, yaml.Node]] = {}
    for k, v in node.value:  # a key written twice: the later one counts (as in mig-parted)
        last.pop(str(k.value), None)
        last[str(k.value)] = (k, v)
    return list(last.values())


def _integer(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def profile_problem(name: str) -> str | None:
    """Why mig-parted's parser refuses this profile name, or None (go-nvlib's parseMigProfile)."""
    if ProfileName.parse(name) is not None:
        return None
    hint = " (profiles are written in lower case, without 'MIG ', e.g. '3g.40gb' or '1c.3g.40gb')"
    return f"{name!r} is not a MIG profile as mig-parted writes one{hint}"


def _entry(node: yaml.Node, source: str) -> ConfigEntry:
    devices: str | tuple[int, ...] = "all"
    dfilter: tuple[DeviceId, ...] = ()
    enabled: bool | None = None
    counts: dict[str, int] | None = None
    lines: dict[str, int] = {}
    seen = set()
    for k, v in _mapping(node, source, "each entry"):
        key = k.value
        seen.add(key)
        if key not in _ENTRY_KEYS:
            raise _err(k, source, f"unknown key {key!r}; valid keys: {', '.join(sorted(_ENTRY_KEYS))}")
        val = _scalar(v)
        if key == "devices":
            if val == "all":
                devices = "all"
            elif isinstance(val, list) and all(_integer(x) for x in val):
                devices = tuple(val)  # (mig-parted takes any integers, -1 too: it matches no GPU)
            else:
                raise _err(v, source, f"devices must be 'all' or a list of GPU indices, not {val!r}")
        elif key == "device-filter":
            if val is None:
                continue  # as if left out
            if isinstance(val, str):
                items = [val] if val else []
            elif isinstance(val, list) and all(isinstance(x, str) for x in val):
                items = list(val)
            else:
                raise _err(
                    v,
                    source,
                    f"device-filter must be a string or a list of strings, not {val!r}: quote PCI ids "
                    '(device-filter: "0x233010DE"), or YAML reads 0x233010DE as a number',
                )
            dfilter = tuple(DeviceId.parse(x) for x in items)
        elif key == "mig-enabled":
            if not isinstance(val, bool):
                raise _err(v, source, f"mig-enabled must be true or false, not {val!r}")
            enabled = val
        elif key == "mig-devices":
            if val is None:
                continue  # as if left out (mig-parted: a null map)
            if not isinstance(val, dict):
                raise _err(v, source, 'mig-devices must map profile names to counts, e.g. {"3g.40gb": 2}')
            counts = {}
            for pk, pv in _mapping(v, source, "mig-devices"):
                name, n = str(_scalar(pk)), _scalar(pv)
                why = profile_problem(name)
                if why:
                    raise _err(pk, source, why)
                if not _integer(n) or n < 0:  # type: ignore[operator]
                    raise _err(pv, source, f"count for {name!r} must be a non-negative integer, not {n!r}")
                counts[name] = n  # type: ignore[assignment]
                lines[name] = pk.start_mark.line + 1
            if counts and not any(counts.values()):
                raise _err(v, source, "every count in mig-devices is 0 (mig-parted refuses that); leave them out")
    if "devices" not in seen:
        raise _err(node, source, "each entry needs 'devices: all' or 'devices: [indices]'")
    if enabled is None:
        raise _err(node, source, "each entry needs 'mig-enabled: true' or 'mig-enabled: false'")
    if enabled and counts is None:
        raise _err(
            node,
            source,
            'mig-enabled: true needs mig-devices: the profiles and counts, e.g. {"3g.40gb": 2}, or {} for none',
        )
    if not enabled and counts:
        raise _err(node, source, "mig-devices given with mig-enabled: false")
    layout = Layout.of(counts or {}) if enabled else Layout(mig_enabled=False)
    return ConfigEntry(layout, devices, dfilter, source, node.start_mark.line + 1, lines)


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: what was wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load(path: str | Path, name: str | None) -> list[ConfigEntry]:
    """Read config `name` from a mig-parted file; without a name the file must hold exactly one config."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {source}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source} is not a text file (byte {e.start} is not UTF-8); is it damaged?") from None
    return loads(text, name, source)


def loads(text: str, name: str | None, source: str = "<config>") -> list[ConfigEntry]:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {yaml_problem(e)}") from None
    if root is None:
        raise ConfigError(f"{source}: empty file; expected 'version: v1' and 'mig-configs:'")
    configs: dict[str, yaml.Node] = {}
    version = None
    pairs = _mapping(root, source, "the file")
    for k, v in pairs:
        if k.value not in _TOP_KEYS:
            raise _err(k, source, f"unknown key {k.value!r}; valid top-level keys: version, mig-configs")
        if k.value == "version":
            version = _scalar(v)
            if version != "v1":
                raise _err(v, source, f"unsupported version {version!r}; migpool reads mig-parted 'version: v1'")
    if version is None:
        raise ConfigError(f"{source}: missing 'version: v1'")
    for k, v in pairs:
        if k.value == "mig-configs":
            found = _mapping(v, source, "mig-configs")
            if not found:
                raise _err(v, source, "mig-configs holds no config (mig-parted wants at least one)")
            for ck, cv in found:
                configs[str(ck.value)] = cv
    if not configs:
        raise ConfigError(f"{source}: no configs under 'mig-configs'")
    if name is None:
        if len(configs) != 1:
            raise ConfigError(f"{source} holds {len(configs)} configs; choose one with -c: {listed(list(configs))}")
        name = next(iter(configs))
    if name not in configs:
        raise ConfigError(f"{source} has no config {name!r}; configs: {listed(list(configs))}")
    node = configs[name]
    if not isinstance(node, yaml.SequenceNode):
        raise _err(node, source, f"config {name!r} must be a list of entries (- devices: ...)")
    if not node.value:
        raise _err(node, source, f"config {name!r} has no entry (mig-parted wants at least one)")
    return [_entry(e, source) for e in node.value]


def machine_layout(entries: Sequence[ConfigEntry], backend: Backend, gpus: Sequence[GpuInfo] = ()) -> MachineLayout:
    """The per-GPU layouts these entries mean on the backend's GPUs (a later entry wins, as when mig-parted applies
    them in order); GPUs no entry selects are left alone. A profile that a selected GPU lacks is refused here, with
    its line, before anything changes (mig-parted finds it only when it reaches that GPU)."""
    every = list(gpus) or backend.gpus()
    out = []
    for e in entries:
        chosen = [g for g in every if e.selects_gpu(g)]
        for g in chosen:
            model = backend.model(g.index)
            for profile, _ in e.layout.counts:
                if model.device_named(profile) is None:
                    names = ", ".join(d.name for d in model.devices)
                    raise ConfigError(
                        f"{e.source}, line {e.lines.get(profile, e.line)}: {profile!r} is not a profile of GPU "
                        f"{g.index} ({model.name}), which this entry selects; its profiles: {names}"
                    )
        if chosen:
            out.append(GpuLayout(e.layout, tuple(g.index for g in chosen)))
    return MachineLayout(tuple(out), tuple(g.index for g in uncovered(entries, every)))


def uncovered(entries: Sequence[ConfigEntry], gpus: Sequence[GpuInfo]) -> list[GpuInfo]:
    """The GPUs that no entry selects: mig-parted's `assert` fails for each of them."""
    return [g for g in gpus if not any(e.selects_gpu(g) for e in entries)]


def device_filter_text(pci_device_id: int) -> str:
    """A GPU's primary PCI id as mig-parted writes it (types.DeviceID.String): '0x233010DE'."""
    return f"0x{pci_device_id >> 16:04X}{pci_device_id & 0xFFFF:04X}"


def dump(
    name: str,
    per_gpu: Sequence[tuple[int, Layout]],
    machine_gpus: Sequence[int] = (),
    device_ids: Mapping[int, int | None] | None = None,
) -> str:
    """A mig-parted config named `name` for these (GPU index, layout) pairs, merged as mig-parted's `export` merges
    its per-GPU entries: GPUs with the same layout share an entry; `device-filter` is written only where the GPUs
    are of more than one type (`device_ids`: each GPU's PCI id); `devices: all` where an entry covers every GPU of
    its types; `mig-devices: {}` for a GPU with MIG disabled. Keys come in the order mig-parted writes them."""
    ids = dict(device_ids or {})
    specs: list[dict[str, Any]] = []
    for index, layout in per_gpu:
        pci = ids.get(index)
        df = device_filter_text(pci) if pci is not None else ""
        counts = dict(sorted(layout.counts)) if layout.mig_enabled else {}
        specs.append(dict(filter=[df], devices=[index], enabled=layout.mig_enabled, migdevices=counts))
    merged: list[dict[str, Any]] = []
    for s in specs:
        same = next((m for m in merged if m["enabled"] == s["enabled"] and m["migdevices"] == s["migdevices"]), None)
        if same is None:
            merged.append(dict(s, filter=list(s["filter"]), devices=list(s["devices"])))
        else:
            same["devices"] = sorted(set(same["devices"]) | set(s["devices"]))
            same["filter"] = sorted(set(same["filter"]) | set(s["filter"]))
    by_filter: dict[str, set[int]] = {}
    for s in specs:
        by_filter.setdefault(s["filter"][0], set()).update(s["devices"])
    machine = set(machine_gpus) or {i for s in specs for i in s["devices"]}
    entries = []
    for m in merged:
        spec_devices: set[int] = set().union(*(by_filter[f] for f in m["filter"]))
        if len(by_filter) == 1:
            spec_devices = machine  # one type of GPU: `all` means every GPU of the machine
        entry: dict[str, Any] = {}
        if len(by_filter) > 1 and len(merged) > 1:
            entry["device-filter"] = m["filter"][0] if len(m["filter"]) == 1 else m["filter"]
        entry["devices"] = "all" if set(m["devices"]) == spec_devices else sorted(m["devices"])
        entry["mig-devices"] = m["migdevices"]
        entry["mig-enabled"] = m["enabled"]
        entries.append(entry)
    return yaml.safe_dump({"mig-configs": {name: entries}, "version": "v1"}, sort_keys=False)
