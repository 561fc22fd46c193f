"""The simulated backend's driver control: the real driver's rules and errors for MIG mode, GPU and compute
instances and resets, what each change costs in time (latency), and the faults and outside events tests inject."""

from __future__ import annotations

import os
import signal
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from ...errors import (
    BackendError,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    NotFoundError,
    NotSupportedError,
    ResetRequiredError,
)
from ...host.devicefiles import standard_minors
from ...host.statedirs import StateDirs
from ...mig import catalog
from ...mig.catalog import GpuModel, Placement
from ...mig.instance import MigInstance
from ...mig.planner import PlannedInstance, can_place
from ..control import ComputeInstanceInfo, DriverControl, GpuInfo, GpuInstanceInfo, ProcessInfo
from .state import SimulatedMachine

LATENCY_ENV = "MIGPOOL_SIM_LATENCY"
# What a GPU-instance change costs on hardware: creation 52–132 ms and destruction 120–164 ms (nvidia-smi on an
# A100, as published); the midpoints. Compute-instance and mode changes were not measured there: no delay.
HARDWARE_LATENCY = {"create_gpu_instance": 0.092, "destroy_gpu_instance": 0.142}
SIMULATED_DRIVER = "580.159.04-simulated"


def parse_latency(text: str | None) -> dict[str, float]:
    """'hardware' -> HARDWARE_LATENCY; 'create_gpu_instance=0.1,destroy_gpu_instance=0.15' -> seconds per op."""
    if not text:
        return {}
    if text.strip() == "hardware":
        return dict(HARDWARE_LATENCY)
    out = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        op, _, value = part.partition("=")
        valid = (
            "create_gpu_instance",
            "destroy_gpu_instance",
            "create_compute_instance",
            "destroy_compute_instance",
            "set_mig_mode",
        )
        try:
            if op not in valid:
                raise ValueError
            out[op] = float(value)
        except ValueError:
            raise BackendError(
                f"cannot read {LATENCY_ENV} item {part!r}; write 'hardware' or OP=SECONDS with OP in {', '.join(valid)}"
            ) from None
    return out


_ERRORS: dict[str, type[BackendError]] = {
    "insufficient_resources": InsufficientResourcesError,
    "in_use": InUseError,
    "not_found": NotFoundError,
    "reset_required": ResetRequiredError,
    "not_supported": NotSupportedError,
    "invalid_argument": InvalidArgumentError,
    "unknown": BackendError,
}


def gi_id_for(placement: Placement, memory_slices: int) -> int:
    """The GPU instance id the driver gives a placement: its index in the binary tree of memory slices."""
    level = 0
    size = memory_slices
    while size > placement.size and size > 1:
        size //= 2
        level += 1
    return (1 << level) - 1 + placement.start // max(size, 1)


def _mig_uuid() -> str:
    return f"MIG-{uuidlib.uuid4()}"


class SimulatedControl(SimulatedMachine, DriverControl):
    """Reads and changes of the simulated GPUs' MIG configuration, with the driver's semantics."""

    def __init__(
        self, spec: str, state_path: str | os.PathLike[str] | None = None, latency: dict[str, float] | str | None = None
    ) -> None:
        """`latency`: seconds each operation takes (as on hardware), a dict, 'hardware', or $MIGPOOL_SIM_LATENCY."""
        self.latency = latency if isinstance(latency, dict) else parse_latency(latency or os.environ.get(LATENCY_ENV))
        super().__init__(spec, state_path)

    def driver_version(self) -> str:
        return SIMULATED_DRIVER

    def mig_minors(self) -> dict[str, int]:
        """The table the driver would write for these GPUs (devicefiles.py)."""
        return standard_minors([g.device_minor for g in self.gpus()])

    def reboot(self) -> None:
        """What a reboot does to a real A100/H100: GPU and compute instances and processes are gone, a MIG mode
        change that was pending takes effect, and the MIG mode itself is kept."""
        with self._state(write=True) as st:
            for g in st["gpus"]:
                g["mig_current"] = g["mig_pending"]
                g["gis"], g["processes"], g["transient"] = [], [], []

    # --- fault injection (tests) ---
    def inject(
        self,
        *,
        fail_at: int | None = None,
        error: str = "unknown",
        kill_at: int | None = None,
        transient_ops: int | None = None,
    ) -> None:
        """Make mutating operation number `fail_at` (counted from now, 1-based) raise `error`, or kill the
        calling process with SIGKILL just before operation `kill_at`. `transient_ops`: after a GI is
        destroyed, its slices read as in use for that many further operations (the real driver's lag)."""
        if error not in _ERRORS:
            raise ValueError(f"error must be one of {sorted(_ERRORS)}")
        with self._state(write=True) as st:
            f: dict[str, Any] = {}
            if fail_at is not None:
                f["fail_at"] = st["ops"] + fail_at
                f["error"] = error
            if kill_at is not None:
                f["kill_at"] = st["ops"] + kill_at
            st["faults"] = f
            if transient_ops is not None:
                st["transient_ops"] = transient_ops

    def operations(self) -> int:
        """How many mutating operations this simulated machine has performed."""
        with self._state() as st:
            return st["ops"]

    def _pay(self, op: str) -> None:
        """Take as long as the operation takes on hardware (with the state locked: the driver serializes them)."""
        delay = self.latency.get(op)
        if delay:
            time.sleep(delay)

    def _op(self, st: dict[str, Any], what: str) -> None:
        st["ops"] += 1
        f = st.get("faults", {})
        if f.get("kill_at") == st["ops"]:
            st["faults"] = {}
            st["ops"] -= 1  # the operation never happened
            self._save(st)
            os.kill(os.getpid(), signal.SIGKILL)
        if f.get("fail_at") == st["ops"]:
            st["faults"] = {}
            raise _ERRORS[f.get("error", "unknown")](f"injected failure at operation {st['ops']} ({what})")

    # --- test helpers that stand for the outside world ---
    def register_process(
        self, gpu: int, pid: int, name: str, device_uuid: str | None = None, used_memory_mib: int = 512
    ) -> None:
        """Record a process using the GPU (or one of its MIG devices); it vanishes when `pid` exits."""
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            g["processes"].append(dict(pid=pid, name=name, device=device_uuid or g["uuid"], used=used_memory_mib))

    def unregister_process(self, pid: int) -> None:
        with self._state(write=True) as st:
            for g in st["gpus"]:
                g["processes"] = [p for p in g["processes"] if p["pid"] != pid]

    def set_reset_blockers(self, gpu: int, names: list[str]) -> None:
        """Pretend these (e.g. 'nvidia-persistenced') keep the GPU from a reset: MIG changes stay pending."""
        with self._state(write=True) as st:
            self._g(st, gpu)["reset_blockers"] = list(names)

    # --- reads ---
    def gpus(self) -> list[GpuInfo]:
        with self._state() as st:
            return [
                GpuInfo(
                    index=g["index"],
                    uuid=g["uuid"],
                    name=self.models[g["index"]].name,
                    memory_mib=self.models[g["index"]].memory_mib,
                    mig_capable=True,
                    mig_current=g["mig_current"],
                    mig_pending=g["mig_pending"],
                    pci_device_id=next(iter(self.models[g["index"]].pci_device_ids), None),
                    pci_bus_id=f"00000000:{(0x18 + 0x10 * g['index']) & 0xFF:02X}:00.0",
                    minor=g["index"],
                )
                for g in st["gpus"]
            ]

    def model(self, gpu: int) -> GpuModel:
        with self._state() as st:
            self._g(st, gpu)
        return self.models[gpu]

    def gpu_instances(self, gpu: int) -> list[GpuInstanceInfo]:
        with self._state() as st:
            g = self._g(st, gpu)
            return [self._gi_info(gpu, gi) for gi in sorted(g["gis"], key=lambda x: x["id"])]

    def _gi_info(self, gpu: int, gi: dict[str, Any]) -> GpuInstanceInfo:
        p = self.models[gpu].profile(gi["profile_id"])
        return GpuInstanceInfo(
            gpu=gpu, id=gi["id"], profile_id=p.id, profile_name=p.name, placement=Placement(gi["start"], gi["size"])
        )

    def compute_instances(self, gpu: int) -> list[ComputeInstanceInfo]:
        with self._state() as st:
            g = self._g(st, gpu)
            out = []
            for gi in sorted(g["gis"], key=lambda x: x["id"]):
                p = self.models[gpu].profile(gi["profile_id"])
                for ci in gi["cis"]:
                    name = p.name if ci["slices"] == p.slices else f"{ci['slices']}c.{p.name}"
                    out.append(
                        ComputeInstanceInfo(
                            gpu=gpu,
                            gi_id=gi["id"],
                            id=ci["id"],
                            slices=ci["slices"],
                            profile_name=name,
                            start=ci.get("start", 0),
                        )
                    )
            return out

    def mig_devices(self, gpu: int) -> list[MigInstance]:
        with self._state() as st:
            g = self._g(st, gpu)
            procs = self._live_processes(g)
            out: list[MigInstance] = []
            if not g["mig_current"]:
                return out
            for gi in sorted(g["gis"], key=lambda x: x["id"]):
                p = self.models[gpu].profile(gi["profile_id"])
                # a MIG device reports its GPU instance's memory: what every compute instance of it uses
                used = sum(x["used"] for x in procs if x["device"] in {ci["uuid"] for ci in gi["cis"]})
                for ci in sorted(gi["cis"], key=lambda x: x["id"]):
                    name = p.name if ci["slices"] == p.slices else f"{ci['slices']}c.{p.name}"
                    out.append(
                        MigInstance(
                            gpu=gpu,
                            gpu_uuid=g["uuid"],
                            gi_id=gi["id"],
                            ci_id=ci["id"],
                            uuid=ci["uuid"],
                            profile_name=name,
                            memory_mib=p.memory_mib,
                            memory_used_mib=used,
                            placement=Placement(gi["start"], gi["size"]),
                            gpu_name=self.models[gpu].name,
                        )
                    )
            return out

    def processes(self, gpu: int) -> list[ProcessInfo]:
        with self._state() as st:
            g = self._g(st, gpu)
            return [
                ProcessInfo(pid=p["pid"], name=p["name"], used_memory_mib=p["used"], gpu=gpu, device_uuid=p["device"])
                for p in self._live_processes(g)
            ]

    def state_dirs(self) -> StateDirs:
        """Beside the simulated machine's state file: its locks, leases and journal, no root needed."""
        here = Path(str(self.path) + ".d")
        return StateDirs(here, here)

    def reset_blockers(self, gpu: int) -> list[str]:
        with self._state() as st:
            return list(self._g(st, gpu)["reset_blockers"])

    # --- writes ---
    def _set_mig_mode(self, gpu: int, enabled: bool) -> bool:
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            self._op(st, "set MIG mode")
            self._pay("set_mig_mode")
            if g["mig_current"] == enabled and g["mig_pending"] == enabled:
                return True
            busy = self._live_processes(g)
            if busy:
                names = ", ".join(f"{p['name']} (pid {p['pid']})" for p in busy)
                raise InUseError(f"GPU {gpu} is in use by {names}; MIG mode cannot change while processes use the GPU")
            if not enabled and g["gis"]:
                raise InUseError(
                    f"GPU {gpu} still has {len(g['gis'])} GPU instance(s); destroy them before disabling MIG"
                )
            g["mig_pending"] = enabled
            if g["reset_blockers"]:
                return False
            g["mig_current"] = enabled
            return True

    def _create_gpu_instance(self, gpu: int, profile_id: int, placement: Placement) -> GpuInstanceInfo:
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            model = self.models[gpu]
            self._op(st, "create GPU instance")
            self._pay("create_gpu_instance")
            if g["mig_current"] != g["mig_pending"]:
                raise ResetRequiredError(f"GPU {gpu} has a MIG mode change pending; reset the GPU first")
            if not g["mig_current"]:
                raise NotSupportedError(f"GPU {gpu} is not in MIG mode; enable MIG mode first")
            try:
                profile = model.profile(profile_id)
            except Exception as e:  # noqa: BLE001 - any lookup failure is the driver's invalid argument
                raise InvalidArgumentError(str(e)) from None
            if placement not in profile.placements:
                raise InvalidArgumentError(
                    f"placement {placement} is not legal for {profile.name} on {model.name}; legal: "
                    + catalog.format_placements(profile.placements)
                )
            existing = [
                PlannedInstance(model.profile(gi["profile_id"]), Placement(gi["start"], gi["size"])) for gi in g["gis"]
            ]
            lagging = [t for t in g["transient"] if t["until"] >= st["ops"]]
            g["transient"] = lagging
            if any(placement.overlaps(Placement(t["start"], t["size"])) for t in lagging):
                raise InsufficientResourcesError(f"memory slices at {placement} on GPU {gpu} are still being released")
            if not can_place(model, existing, profile, placement):
                raise InsufficientResourcesError(f"no room for {profile.name} at {placement} on GPU {gpu}")
            gi = dict(
                id=gi_id_for(placement, model.memory_slices),
                profile_id=profile.id,
                start=placement.start,
                size=placement.size,
                cis=[],
            )
            g["gis"].append(gi)
            return self._gi_info(gpu, gi)

    def _find_gi(self, g: dict[str, Any], gpu: int, gi_id: int) -> dict[str, Any]:
        for gi in g["gis"]:
            if gi["id"] == gi_id:
                return gi
        raise NotFoundError(f"GPU {gpu} has no GPU instance {gi_id}")

    def _destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            gi = self._find_gi(g, gpu, gi_id)
            self._op(st, "destroy GPU instance")
            self._pay("destroy_gpu_instance")
            if gi["cis"]:
                raise InUseError(f"GPU instance {gi_id} on GPU {gpu} still has compute instances")
            g["gis"].remove(gi)
            if st.get("transient_ops"):
                g["transient"].append(dict(start=gi["start"], size=gi["size"], until=st["ops"] + st["transient_ops"]))

    def _create_compute_instance(self, gpu: int, gi_id: int, slices: int | None) -> ComputeInstanceInfo:
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            gi = self._find_gi(g, gpu, gi_id)
            p = self.models[gpu].profile(gi["profile_id"])
            self._op(st, "create compute instance")
            self._pay("create_compute_instance")
            want = slices or p.slices
            if want not in [c.slices for c in p.compute_profiles]:
                raise InvalidArgumentError(f"{want}-slice compute instances are not offered in {p.name}")
            kind = p.compute(want)
            taken = {k for c in gi["cis"] for k in range(c.get("start", 0), c.get("start", 0) + c["slices"])}
            start = next((x for x in kind.starts if not taken & set(range(x, x + want))), None)
            if start is None or sum(1 for c in gi["cis"] if c["slices"] == want) >= kind.instances:
                raise InsufficientResourcesError(
                    f"GPU instance {gi_id} on GPU {gpu} has no room for a {want}-slice compute instance"
                )
            ci = dict(
                id=len(gi["cis"]) and max(c["id"] for c in gi["cis"]) + 1, slices=want, start=start, uuid=_mig_uuid()
            )
            gi["cis"].append(ci)
            name = p.name if want == p.slices else f"{want}c.{p.name}"
            return ComputeInstanceInfo(
                gpu=gpu, gi_id=gi_id, id=int(ci["id"]), slices=want, profile_name=name, start=start
            )

    def _destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None:
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            gi = self._find_gi(g, gpu, gi_id)
            ci = next((c for c in gi["cis"] if c["id"] == ci_id), None)
            if ci is None:
                raise NotFoundError(f"GPU instance {gi_id} on GPU {gpu} has no compute instance {ci_id}")
            self._op(st, "destroy compute instance")
            self._pay("destroy_compute_instance")
            users = [p for p in self._live_processes(g) if p["device"] == ci["uuid"]]
            if users:
                names = ", ".join(f"{p['name']} (pid {p['pid']})" for p in users)
                raise InUseError(f"MIG device {ci['uuid']} is in use by {names}")
            gi["cis"].remove(ci)

    def _reset_gpu(self, gpu: int) -> None:
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            self._op(st, "reset GPU")
            busy = self._live_processes(g)
            if busy or g["reset_blockers"]:
                who = [f"{p['name']} (pid {p['pid']})" for p in busy] + g["reset_blockers"]
                raise InUseError(f"GPU {gpu} cannot be reset while in use by: {', '.join(who)}")
            g["mig_current"] = g["mig_pending"]
            g["gis"] = [] if not g["mig_current"] else g["gis"]
            g["transient"] = []
