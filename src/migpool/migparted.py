"""NVIDIA mig-parted's config format (version v1), read as it is and written by `export`.

version: v1
mig-configs:
  all-3g.40gb:
    - devices: all            # or a list of GPU indices
      device-filter: ["0x233010DE"]   # optional: PCI device ids this entry is for
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .backend.base import GpuInfo
from .errors import ConfigError
from .layout import GpuLayout, Layout, MachineLayout

_ENTRY_KEYS = {"devices", "device-filter", "mig-enabled", "mig-devices"}


@dataclass(frozen=True)
class ConfigEntry:
    layout: Layout
    devices: str | tuple[int, ...]
    device_filter: tuple[int, ...] = ()

    def selects(self, index: int, pci_device_id: int | None) -> bool:
        if self.device_filter and pci_device_id not in self.device_filter:
            return False
        return self.devices == "all" or index in self.devices


def _err(node: yaml.Node, source: str, text: str) -> ConfigError:
    return ConfigError(f"{source}, line {node.start_mark.line + 1}: {text}")


def _scalar(node: yaml.Node) -> object:
    return yaml.safe_load(yaml.serialize(node))


def _mapping(node: yaml.Node, source: str, what: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise _err(node, source, f"{what} must be a mapping")
    return list(node.value)


def _pci(value: object, node: yaml.Node, source: str) -> int:
    try:
        return int(str(value), 16) if isinstance(value, str) else int(str(value))
    except (TypeError, ValueError):
        raise _err(node, source, f"device-filter entry {value!r} is not a PCI device id like '0x233010DE'") from None


def _entry(node: yaml.Node, source: str) -> ConfigEntry:
    devices: str | tuple[int, ...] = "all"
    dfilter: tuple[int, ...] = ()
    enabled: bool | None = None
    counts: dict[str, int] = {}
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
            elif isinstance(val, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in val):
                devices = tuple(val)
            else:
                raise _err(v, source, f"devices must be 'all' or a list of GPU indices, not {val!r}")
        elif key == "device-filter":
            items = val if isinstance(val, list) else [val]
            dfilter = tuple(_pci(x, v, source) for x in items)
        elif key == "mig-enabled":
            if not isinstance(val, bool):
                raise _err(v, source, f"mig-enabled must be true or false, not {val!r}")
            enabled = val
        elif key == "mig-devices":
            if val is None:
                raise _err(
                    v,
                    source,
                    "mig-devices is empty (null), which would destroy every partition; give the profiles and "
                    'counts, e.g. {"3g.40gb": 2}, or write {} to mean no partitions',
                )
            if not isinstance(val, dict):
                raise _err(v, source, 'mig-devices must map profile names to counts, e.g. {"3g.40gb": 2}')
            for name, n in val.items():
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    raise _err(v, source, f"count for {name!r} must be a non-negative integer, not {n!r}")
                counts[str(name)] = n
    if enabled is None:
        raise _err(node, source, "each entry needs 'mig-enabled: true' or 'mig-enabled: false'")
    if "devices" not in seen:
        raise _err(node, source, "each entry needs 'devices: all' or 'devices: [indices]'")
    if not enabled and counts:
        raise _err(node, source, "mig-devices given with mig-enabled: false")
    layout = Layout.of(counts) if enabled else Layout(mig_enabled=False)
    return ConfigEntry(layout, devices, dfilter)


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
    for k, v in _mapping(root, source, "the file"):
        if k.value == "version":
            version = _scalar(v)
            if version != "v1":
                raise _err(v, source, f"unsupported version {version!r}; migpool reads mig-parted 'version: v1'")
        elif k.value == "mig-configs":
            for ck, cv in _mapping(v, source, "mig-configs"):
                configs[str(ck.value)] = cv
        else:
            raise _err(k, source, f"unknown key {k.value!r}; valid top-level keys: version, mig-configs")
    if version is None:
        raise ConfigError(f"{source}: missing 'version: v1'")
    if not configs:
        raise ConfigError(f"{source}: no configs under 'mig-configs'")
    if name is None:
        if len(configs) != 1:
            raise ConfigError(f"{source} holds {len(configs)} configs; choose one with -c: {', '.join(configs)}")
        name = next(iter(configs))
    if name not in configs:
        raise ConfigError(f"{source} has no config {name!r}; configs: {', '.join(configs)}")
    node = configs[name]
    if not isinstance(node, yaml.SequenceNode):
        raise _err(node, source, f"config {name!r} must be a list of entries (- devices: ...)")
    return [_entry(e, source) for e in node.value]


def machine_layout(entries: Sequence[ConfigEntry], gpus: Sequence[GpuInfo]) -> MachineLayout:
    """The per-GPU layouts these entries mean on these GPUs (a later entry wins); unmatched GPUs are left alone."""
    out = []
    for e in entries:
        chosen = tuple(g.index for g in gpus if e.selects(g.index, g.pci_device_id))
        if chosen:
            out.append(GpuLayout(e.layout, chosen))
    return MachineLayout(tuple(out))


def dump(name: str, per_gpu: Sequence[tuple[int, Layout]], machine_gpus: Sequence[int] = ()) -> str:
    """A mig-parted config named `name` for these (GPU index, layout) pairs; identical layouts share an entry,
    written `devices: all` only when it covers every GPU of the machine (`machine_gpus`)."""
    groups: dict[tuple, list[int]] = {}
    for index, layout in per_gpu:
        key = (layout.mig_enabled, layout.counts)
        groups.setdefault(key, []).append(index)
    entries = []
    for (enabled, counts), indices in groups.items():
        entry: dict[str, object] = {
            "devices": "all" if sorted(indices) == sorted(machine_gpus) else sorted(indices),
            "mig-enabled": enabled,
        }
        if enabled:
            entry["mig-devices"] = {n: c for n, c in counts}
        entries.append(entry)
    return yaml.safe_dump({"version": "v1", "mig-configs": {name: entries}}, sort_keys=False)
