"""A backend is two concerns, driver control and telemetry (base.py), each backend composed of one class for each,
small enough to read: no module of the backend package over 700 lines, no class over 400."""

import ast
from pathlib import Path

import fake_pynvml
import pytest

from migpool import NvmlBackend, SimulatedBackend
from migpool.backend.base import Backend, DriverControl, Telemetry
from migpool.backend.nvml import NvmlControl, NvmlTelemetry
from migpool.backend.simulated import SimulatedControl, SimulatedTelemetry

BACKEND = Path(__file__).resolve().parents[2] / "src" / "migpool" / "backend"


@pytest.mark.parametrize(
    "backend, control, telemetry",
    [(NvmlBackend, NvmlControl, NvmlTelemetry), (SimulatedBackend, SimulatedControl, SimulatedTelemetry)],
)
def test_each_backend_is_its_control_and_its_telemetry(backend, control, telemetry):
    assert issubclass(backend, Backend) and issubclass(control, DriverControl) and issubclass(telemetry, Telemetry)
    assert not issubclass(control, Telemetry) and not issubclass(telemetry, DriverControl)
    assert backend.__bases__[:2] == (control, telemetry)


def test_telemetry_holds_no_change():
    writes = {"set_mig_mode", "create_gpu_instance", "destroy_gpu_instance", "reset_gpu"}
    writes |= {"create_compute_instance", "destroy_compute_instance"}
    assert writes <= set(dir(DriverControl)) and not writes & set(dir(Telemetry))


def test_xid_events_name_the_gpu_by_index(sim):
    s = sim("A100-80GB:2")
    nv = NvmlBackend(nvml=fake_pynvml.make(s))
    s.inject_xid(1, 79)
    s.inject_xid(0, 31)
    assert nv.xid_events() == [(1, 79), (0, 31)]  # the second GPU's error names GPU 1, not 0


def test_no_backend_module_or_class_is_too_long_to_read():
    too_long = []
    for f in sorted(BACKEND.rglob("*.py")):
        text = f.read_text()
        if len(text.splitlines()) > 700:
            too_long.append(f"{f.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 400:
                too_long.append(f"{f.name}: class {node.name}, {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
