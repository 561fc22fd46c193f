"""One MIG instance on a GPU, as one value: a GPU instance with one of its compute instances (what CUDA sees
through CUDA_VISIBLE_DEVICES=MIG-<uuid>), with the GPU it is on (`parent`, as nvitop's MigDevice knows its
physical device).

The driver reports it (`backend.mig_devices`, under its older name `MigDeviceInfo`), reconcile reads it, the pool's
`Partition` is built from it (`Partition.of`) and telemetry samples it (`PartitionSample.of`). The journal keeps
GPU instances by their profile and placement only (`InstanceRecord`, whose `key` is `instance_key`): ids and
UUIDs change when an instance is made again."""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Placement

InstanceKey = tuple[str, int, int]  # a GPU instance's profile name, first memory slice and size


def instance_key(profile: str, placement: Placement) -> InstanceKey:
    """What tells one GPU instance of a GPU from another across runs: its profile and placement."""
    return (profile, placement.start, placement.size)


@dataclass(frozen=True)
class GpuRef:
    """The GPU a MIG instance is on: its index on the machine, its UUID and its model name (the driver's)."""

    index: int
    uuid: str
    name: str = ""


@dataclass(frozen=True)
class MigInstance:
    """A MIG device: GPU instance `gi_id` and its compute instance `ci_id` on GPU `gpu` (an index). `profile_name` is
    the device profile (`3g.40gb`, or `1c.3g.40gb` for a compute instance smaller than its GPU instance), `placement`
    its GPU instance's, `memory_mib` and `memory_used_mib` its GPU instance's memory."""

    gpu: int
    gpu_uuid: str
    gi_id: int
    ci_id: int
    uuid: str
    profile_name: str
    memory_mib: int
    memory_used_mib: int
    placement: Placement
    gpu_name: str = ""  # the GPU's model name, where the driver says

    @property
    def parent(self) -> GpuRef:
        """The GPU it is on."""
        return GpuRef(self.gpu, self.gpu_uuid, self.gpu_name)
