"""Who holds each partition, as labels for its series: the lease's holder (PID, command, user), the pool and the
task running on it where a pool publishes them, the Slurm job from the holder's environment, and the Kubernetes
pod, namespace and container from the kubelet's pod-resources socket (dcgm-exporter's label names).

Opt-in (`migpool metrics --holders`): the labels reveal process names and users to whoever can scrape the port.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..host.leases import LeaseHolder, holders

LABELS = (
    "holder_pid",
    "holder_command",
    "holder_user",
    "pool",
    "task",
    "slurm_job_id",
    "slurm_step_id",
    "pod",
    "namespace",
    "container",
)
COMMAND_CHARS = 60  # a holder's command is cut to this many characters (a label value is stored per series)
POD_RESOURCES_ENV = "MIGPOOL_POD_RESOURCES"  # the kubelet's pod-resources socket, where it is not the default
POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
POD_RESOURCES_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Holder:
    pid: int = 0
    command: str = ""
    user: str = ""
    pool: str = ""
    task: str = ""
    slurm_job_id: str = ""
    slurm_step_id: str = ""
    pod: str = ""
    namespace: str = ""
    container: str = ""

    def values(self) -> list[str]:
        """The label values, in LABELS' order ("" where unknown: Prometheus reads an empty label as absent)."""
        pid = str(self.pid) if self.pid else ""
        fields = (self.pool, self.task, self.slurm_job_id, self.slurm_step_id, self.pod, self.namespace)
        return [pid, self.command[:COMMAND_CHARS], self.user, *fields, self.container]


NOBODY = Holder()


def label_values(found: Iterable[Holder]) -> list[str]:
    """The label values of a series that stands for several devices (a GPU instance's compute instances): each
    holder's values, joined by "," where they differ; all "" where nobody holds any."""
    columns = zip(*(h.values() for h in dict.fromkeys(found)), strict=True)
    values = [",".join(v for v in dict.fromkeys(col) if v) for col in columns]
    return values or NOBODY.values()


def _environ(pid: int) -> dict[str, str]:
    """The environment a process started with (empty where it cannot be read: another user's, or gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _pools_by_pid(pools: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    return {int(p.get("pid", 0)): p for p in pools}


def _task_on(pool: Mapping[str, Any] | None, uuid: str) -> str:
    for w in (pool or {}).get("workers", ()):
        if w.get("partition") == uuid and w.get("running"):
            return str(w.get("task") or "")
    return ""


def read(
    leases_dir: Path,
    uuids: Iterable[str],
    pools: Iterable[Mapping[str, Any]] = (),
    pods: Mapping[str, tuple[str, str, str]] | None = None,
) -> dict[str, Holder]:
    """The holder of each of `uuids` that someone leases, or that a pod was given (`pods`: device id ->
    (pod, namespace, container), from `pod_devices`)."""
    uuids = list(uuids)
    leased: dict[str, LeaseHolder] = holders(leases_dir, uuids)
    by_pid = _pools_by_pid(pools)
    pods = pods or {}
    environ: dict[int, dict[str, str]] = {}
    out = {}
    for uuid in uuids:
        who = leased.get(uuid)
        pod, namespace, container = pods.get(uuid, ("", "", ""))
        if who is None and not pod:
            continue
        pid = who.pid if who is not None else 0
        env = environ.setdefault(pid, _environ(pid)) if pid else {}
        pool = by_pid.get(pid)
        out[uuid] = Holder(
            pid,
            who.command if who is not None else "",
            who.user if who is not None else "",
            str((pool or {}).get("name") or ""),
            _task_on(pool, uuid),
            env.get("SLURM_JOB_ID", ""),
            env.get("SLURM_STEP_ID", ""),
            pod,
            namespace,
            container,
        )
    return out


# --- the kubelet's pod-resources API (k8s.io/kubelet/pkg/apis/podresources/v1), read without generated code ---
LIST_METHOD = "/v1.PodResourcesLister/List"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf: bytes) -> list[tuple[int, bytes | int]]:
    """A protobuf message's fields in wire order: (number, bytes for length-delimited fields, else the integer)."""
    out: list[tuple[int, bytes | int]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            out.append((number, value))
        elif wire == 2:
            size, i = _varint(buf, i)
            out.append((number, buf[i : i + size]))
            i += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            out.append((number, int.from_bytes(buf[i : i + width], "little")))
            i += width
        else:
            raise ValueError(f"protobuf wire type {wire} is not one the pod-resources API uses")
    return out


def _strings(buf: bytes, number: int) -> list[str]:
    return [v.decode() for n, v in fields(buf) if n == number and isinstance(v, bytes)]


def _messages(buf: bytes, number: int) -> list[bytes]:
    return [v for n, v in fields(buf) if n == number and isinstance(v, bytes)]


def devices_of(response: bytes) -> dict[str, tuple[str, str, str]]:
    """ListPodResourcesResponse -> device id -> (pod, namespace, container). Field numbers: pod_resources=1;
    PodResources name=1, namespace=2, containers=3; ContainerResources name=1, devices=2; ContainerDevices
    resource_name=1, device_ids=2."""
    out = {}
    for pod in _messages(response, 1):
        name, namespace = (_strings(pod, 1) or [""])[0], (_strings(pod, 2) or [""])[0]
        for container in _messages(pod, 3):
            cname = (_strings(container, 1) or [""])[0]
            for dev in _messages(container, 2):
                for device_id in _strings(dev, 2):
                    out[device_id] = (name, namespace, cname)
    return out


def pod_devices(socket: str | None = None) -> tuple[dict[str, tuple[str, str, str]], str | None]:
    """The devices the kubelet gave each pod's containers, and why none were read (no socket: not a Kubernetes
    node; no grpcio; the kubelet refused). Device ids are MIG UUIDs with the NVIDIA device plugin's default
    `deviceIDStrategy=uuid`."""
    path = socket or os.environ.get(POD_RESOURCES_ENV) or POD_RESOURCES_SOCKET
    if not os.path.exists(path):
        return {}, None
    try:
        import grpc
    except ImportError:
        return {}, f"{path} exists but grpcio is not installed (pip install grpcio) to read it"
    with contextlib.closing(grpc.insecure_channel(f"unix://{path}")) as channel:
        call = channel.unary_unary(LIST_METHOD, request_serializer=bytes, response_deserializer=bytes)
        try:
            return devices_of(call(b"", timeout=POD_RESOURCES_TIMEOUT_S)), None
        except grpc.RpcError as e:
            return {}, f"the kubelet's pod-resources socket {path} answered {e.code().name}"
