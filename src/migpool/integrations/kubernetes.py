"""What Kubernetes sees of a layout through NVIDIA's k8s-device-plugin, GPU feature discovery (GFD) and the GPU
operator's mig-manager, as their sources define it (github.com/NVIDIA/k8s-device-plugin: internal/lm,
internal/resource; NVIDIA/gpu-operator: assets/state-mig-manager). Checked against those sources and their
documented examples, never against a running cluster.

- Resources. MIG strategy `mixed`: one resource per MIG device name, `nvidia.com/mig-<name>`, the name being
  the profile as NVIDIA's go-nvlib writes it with '+' made '.' (`mig-1g.10gb.me`, `mig-1c.3g.40gb`), and
  whole GPUs as `nvidia.com/gpu`. Strategy `single`: MIG devices as `nvidia.com/gpu`, valid only when every
  GPU of the node has MIG enabled, none is empty, and all MIG devices have one name.
- Labels (GFD): per resource `<resource>.{product,count,replicas,sharing-strategy,memory,multiprocessors,
  slices.gi,slices.ci,engines.*}`, product `<GPU name>-MIG-<name>` with spaces as '-'; `nvidia.com/mig.strategy`;
  an invalid single layout is labelled `nvidia.com/gpu.product=<GPU name>-MIG-INVALID` with count 0.
- mig-manager: a ConfigMap whose `config.yaml` is a mig-parted config; the node label
  `nvidia.com/mig.config=<config name>` selects the config to apply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..backend import Backend
from ..errors import MigpoolError
from ..mig.catalog import DeviceProfile, GpuModel
from ..mig.layout import Layout
from ..ui import comment

ENGINES = {"copy": "copy_engines", "decoder": "decoders", "encoder": "encoders", "jpeg": "jpeg", "ofa": "ofa"}


def sanitise(text: str) -> str:
    """GFD's label-value cleaning: only letters, digits, '-', '_', '.', spaces; runs of spaces become one '-'."""
    return "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", text).split())


def resource_name(device: DeviceProfile) -> str:
    """The mixed strategy's resource for a MIG device of this profile."""
    return f"nvidia.com/mig-{device.name.replace('+', '.')}"


@dataclass(frozen=True)
class K8sView:
    mixed: dict[str, int]  # resource -> count, strategy mixed
    single: dict[str, int] | None  # strategy single, None where it cannot express the layout
    single_reason: str
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # strategy -> GFD's labels
    notes: tuple[str, ...] = ()


def _mig_labels(resource: str, gpu_name: str, device: DeviceProfile, count: int) -> tuple[dict[str, str], bool]:
    """GFD's labels of one MIG resource, and whether the engine counts were known."""
    out = {
        f"{resource}.product": f"{sanitise(gpu_name)}-MIG-{sanitise(device.name.replace('+', '.'))}",
        f"{resource}.count": str(count),
        f"{resource}.replicas": "1",
        f"{resource}.sharing-strategy": "none",
        f"{resource}.memory": str(device.memory_mib),
        f"{resource}.multiprocessors": str(device.sms),
        f"{resource}.slices.gi": str(device.gi.slices),
        f"{resource}.slices.ci": str(device.ci.slices),
    }
    media = device.gi.media
    if all(k in media for k in ENGINES.values()):
        out |= {f"{resource}.engines.{label}": str(media[key]) for label, key in ENGINES.items()}
    return out, bool(media)


def _gpu_labels(names: list[str], memory: dict[str, int], families: dict[str, str], whole: set[str]) -> dict[str, str]:
    """GFD's full-GPU labels: product and count of the GPUs' name (a whole GPU's name wins), memory, family."""
    if not names:
        return {}
    name = next((n for n in names if n in whole), names[0])
    out = {
        "nvidia.com/gpu.product": sanitise(name),
        "nvidia.com/gpu.count": str(names.count(name)),
        "nvidia.com/gpu.replicas": "1" if name in whole else "0",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.memory": str(memory[name]),
        "nvidia.com/mig.capable": "true",
    }
    if families.get(name):
        out["nvidia.com/gpu.family"] = families[name]
    return out


def view(backend: Backend, per_gpu: Sequence[tuple[int, Layout]]) -> K8sView:
    """The resources and labels the device plugin and GFD give this node under each MIG strategy."""
    gpus = {g.index: g for g in backend.gpus()}
    models: dict[int, GpuModel] = {}
    for i, lay in per_gpu:
        try:
            models[i] = backend.model(i)
        except MigpoolError:
            if lay.mig_enabled:
                raise
    names = [gpus[i].name for i, _ in per_gpu]
    whole = {gpus[i].name for i, lay in per_gpu if not lay.mig_enabled}
    memory = {gpus[i].name: gpus[i].memory_mib for i, _ in per_gpu}
    families = {gpus[i].name: models[i].architecture for i in models}
    mixed: dict[str, int] = {}
    if whole:
        mixed["nvidia.com/gpu"] = len([1 for _, lay in per_gpu if not lay.mig_enabled])
    devices: dict[str, tuple[str, DeviceProfile]] = {}
    for i, lay in per_gpu:
        for name, n in lay.counts if lay.mig_enabled else ():
            d = models[i].device(name)
            key = resource_name(d)
            mixed[key] = mixed.get(key, 0) + n
            devices.setdefault(key, (gpus[i].name, d))
    unknown: list[str] = []
    gpu_labels = _gpu_labels(names, memory, families, whole)
    labels_mixed = {"nvidia.com/mig.strategy": "mixed", **gpu_labels}
    for key, (gpu_name, d) in devices.items():
        more, known = _mig_labels(key, gpu_name, d, mixed[key])
        labels_mixed |= more
        if not known and gpu_name not in unknown:
            unknown.append(gpu_name)
    notes = [
        f"engines.* labels left out: no engine counts are known for {name} (the catalog lacks them; NVML gives "
        "them on a real GPU)"
        for name in unknown
    ]

    enabled = [i for i, lay in per_gpu if lay.mig_enabled]
    empty = [i for i in enabled if not dict(per_gpu)[i].counts]
    single: dict[str, int] | None = None
    labels_single = {"nvidia.com/mig.strategy": "single", **gpu_labels}  # MIG labels override the GPU's
    if not enabled:
        single, reason = {"nvidia.com/gpu": len(per_gpu)}, "no GPU has MIG enabled: whole GPUs"
    elif empty:
        reason = f"GPU(s) {', '.join(map(str, empty))} have MIG enabled but no MIG devices"
    elif whole:
        off = ", ".join(str(i) for i, lay in per_gpu if not lay.mig_enabled)
        reason = f"GPU(s) {off} have MIG disabled while others have it enabled"
    elif len(devices) != 1:
        reason = f"the MIG devices have {len(devices)} names ({', '.join(k.split('mig-')[1] for k in devices)})"
    else:
        ((key, (gpu_name, d)),) = devices.items()
        single = {"nvidia.com/gpu": mixed[key]}
        reason = f"every GPU holds only {d.name} devices"
        labels_single |= _mig_labels("nvidia.com/gpu", gpu_name, d, mixed[key])[0]
    if single is None:
        labels_single |= {
            "nvidia.com/gpu.product": f"{sanitise(gpus[enabled[0]].name)}-MIG-INVALID",
            "nvidia.com/gpu.count": "0",
            "nvidia.com/gpu.replicas": "0",
            "nvidia.com/gpu.sharing-strategy": "",
            "nvidia.com/gpu.memory": "0",
        }
    return K8sView(mixed, single, reason, {"mixed": labels_mixed, "single": labels_single}, tuple(notes))


def configmap(config_name: str, mig_parted_config: str, namespace: str = "gpu-operator") -> str:
    """A ConfigMap for the GPU operator's mig-manager holding this mig-parted config."""
    body = "\n".join(f"    {line}" if line else "" for line in mig_parted_config.rstrip("\n").splitlines())
    return (
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        f"  name: migpool-{config_name}\n"
        f"  namespace: {namespace}\n"
        "data:\n"
        "  config.yaml: |\n"
        f"{body}\n"
    )


def describe(seen: K8sView, configmap: str, name: str, node: str) -> str:
    """What Kubernetes sees, for people (`migpool export --k8s`): the resources and labels per MIG strategy as
    comments, then mig-manager's ConfigMap (`configmap`) for the config `name`, selected by labelling `node`."""
    lines = [
        *comment(
            "Kubernetes, as NVIDIA's device plugin, GPU feature discovery and the GPU operator's mig-manager "
            "define it in their sources (not checked against a running cluster). MIG strategy 'mixed': the node "
            "advertises"
        ),
        *(f"{k}: {n}" for k, n in seen.mixed.items()),
        "# and is labelled",
        *(f"{k}={v}" for k, v in sorted(seen.labels["mixed"].items())),
        *(line for n in seen.notes for line in comment(n)),
    ]
    if seen.single is not None:
        lines += comment(f"MIG strategy 'single' ({seen.single_reason}): the node advertises")
        lines += [f"{k}: {n}" for k, n in seen.single.items()]
    else:
        lines += comment(
            f"MIG strategy 'single' cannot express this layout: {seen.single_reason}; the node would advertise "
            "no GPU and be labelled"
        )
        lines += [f"{k}={v}" for k, v in sorted(seen.labels["single"].items()) if "INVALID" in v or k.endswith("count")]
    lines += [
        *comment(
            "mig-manager applies this layout from the ConfigMap below (the ClusterPolicy's "
            "spec.migManager.config.name names it), selected by"
        ),
        f"#   kubectl label node {node} nvidia.com/mig.config={name} --overwrite",
        "---",
        configmap.rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"
