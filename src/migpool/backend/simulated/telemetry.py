"""The simulated backend's telemetry: the activity tests set, readings that follow it (health), and the XID
errors tests inject."""

from __future__ import annotations

import time
from typing import Any

from ...errors import NotFoundError, NotSupportedError
from ..telemetry import Activity, Health, Telemetry
from .state import SimulatedMachine

# idle and full-load power (W), top SM and memory clocks (MHz) of the simulated GPUs, by architecture
_POWER_CLOCKS = {
    "ampere": (55.0, 400.0, 1410, 1593),
    "hopper": (72.0, 700.0, 1980, 2619),
    "blackwell": (120.0, 1000.0, 1965, 3996),
}
_UTIL_FIELDS = ("gpu_util", "mem_copy_util", "enc_util", "dec_util")


def _load(g: dict[str, Any]) -> tuple[float, float]:
    """The GPU's SM load and DRAM activity (percent): the highest that any of its instances has been set to."""
    acts = list(g.get("activity", {}).values())
    load = max((max(a.get("sm_active", 0.0), a.get("graphics_active", 0.0)) for a in acts), default=0.0)
    return load, max((a.get("dram_active", 0.0) for a in acts), default=0.0)


class SimulatedTelemetry(SimulatedMachine, Telemetry):
    """Readings of the simulated GPUs, from their state file."""

    def set_activity(self, gpu: int, gi_id: int | None = None, **percent: float) -> None:
        """What the simulated GPU (or GPU instance) reports as its activity from now on (tests set this)."""
        fields = set(Activity.__dataclass_fields__)
        if set(percent) - fields:
            raise ValueError(f"unknown activity field(s) {sorted(set(percent) - fields)}; valid: {sorted(fields)}")
        now = time.time()
        with self._state(write=True) as st:
            g = self._g(st, gpu)
            meter = self._meter(st, g, now)  # the energy drawn so far at the old power, from here on at the new
            g.setdefault("activity", {})[str(gi_id)] = percent
            g["energy"] = dict(mj=meter["mj"], at=now, w=self._power(gpu, g))

    def activity(self, gpu: int, gi_id: int | None = None) -> Activity | None:
        model = self.models[gpu]
        if not model.has_gpm:
            raise NotSupportedError(f"{model.name} has no GPM (per-instance activity counters need Hopper or later)")
        with self._state() as st:
            g = self._g(st, gpu)
            if gi_id is not None and not any(gi["id"] == gi_id for gi in g["gis"]):
                raise NotFoundError(f"GPU {gpu} has no GPU instance {gi_id}")
            idle = {f: 0.0 for f in Activity.__dataclass_fields__}  # an idle GPU reports zeros, as real ones do
            return Activity(**{**idle, **g.get("activity", {}).get(str(gi_id), {})})

    def health(self, gpu: int) -> Health:
        """Readings that follow the simulated load (the activity tests set, set_activity): temperatures and power
        rise with it, clocks boost, the energy counter grows with the power drawn over time. Like NVML, the
        utilization fields are not reported while MIG is enabled."""
        model = self.models[gpu]
        _, _, sm_mhz, mem_mhz = _POWER_CLOCKS.get(model.architecture, _POWER_CLOCKS["ampere"])
        now = time.time()
        with self._state() as st:
            g = self._g(st, gpu)
            load, dram = _load(g)
            power = self._power(gpu, g)
            meter = self._meter(st, g, now)
            mig = g["mig_current"]
            missing = [(f, "not reported while MIG is enabled (NVML)") for f in _UTIL_FIELDS] if mig else []
            return Health(
                gpu_temp=float(round(32.0 + 0.45 * load)),  # (NVML reports whole degrees)
                memory_temp=float(round(36.0 + 0.35 * load)),
                power_w=round(power, 3),
                energy_mj=int(meter["mj"]),
                sm_clock_mhz=int(345 + (sm_mhz - 345) * min(1.0, load / 10.0)),
                mem_clock_mhz=mem_mhz,
                gpu_util=None if mig else load,
                mem_copy_util=None if mig else dram,
                enc_util=None if mig else 0.0,
                dec_util=None if mig else 0.0,
                pcie_replays=0,
                pcie_tx_bytes=load * 2.5e6,
                pcie_rx_bytes=load * 1.5e6,
                fb_reserved_mib=int(model.memory_mib * 0.0057),
                nvlink_bandwidth=0,
                rows_remapped_correctable=0,
                rows_remapped_uncorrectable=0,
                row_remap_failure=0,
                missing=tuple(missing),
            )

    def _power(self, gpu: int, g: dict[str, Any]) -> float:
        """The power (W) the GPU draws at the activity set for it."""
        idle_w, max_w, _, _ = _POWER_CLOCKS.get(self.models[gpu].architecture, _POWER_CLOCKS["ampere"])
        return idle_w + (max_w - idle_w) * _load(g)[0] / 100.0

    def _meter(self, st: dict[str, Any], g: dict[str, Any], now: float) -> dict[str, float]:
        """The energy counter at `now`, computed, not stored: the energy at the last change of power plus the
        power since (a GPU whose power never changed draws its idle power since the state was first saved)."""
        meter = g.get("energy") or dict(mj=0.0, at=st.get("booted", now), w=self._power(g["index"], g))
        return dict(mj=meter["mj"] + meter["w"] * max(0.0, now - meter["at"]) * 1000.0, at=now, w=meter["w"])

    def inject_xid(self, gpu: int, xid: int) -> None:
        """A simulated XID error on `gpu` (what NVML's event set reports; dcgm-exporter's DCGM_FI_DEV_XID_ERRORS)."""
        with self._state(write=True) as st:
            self._g(st, gpu)
            st.setdefault("xid", []).append([gpu, xid])

    def xid_events(self) -> list[tuple[int, int]]:
        """The XID errors since the last call; taking them is the only write, and only when there are some."""
        with self._state() as st:
            if not st.get("xid"):
                return []
        with self._state(write=True) as st:
            return [(int(g), int(x)) for g, x in st.pop("xid", [])]
