"""The driver's MIG device files: the mig-minors table (simulated as the driver numbers it, checked against the
H200's own file where docs/hardware has it) and which device a set of files reaches."""

from __future__ import annotations

from pathlib import Path

import pytest

from migpool import SimulatedBackend
from migpool.errors import NotFoundError
from migpool.host.devicefiles import DeviceFiles, mig_files, owner, parse_minors, read_minors, standard_minors

REAL = Path(__file__).resolve().parents[2] / "docs" / "hardware" / "mig-minors-h200.txt"


def test_the_simulated_table_numbers_as_the_driver_does():
    t = standard_minors([0, 1])
    assert (t["config"], t["monitor"]) == (1, 2)
    assert (t["gpu0/gi0/access"], t["gpu0/gi0/ci0/access"], t["gpu0/gi0/ci7/access"]) == (3, 4, 11)
    assert (t["gpu0/gi1/access"], t["gpu0/gi1/ci0/access"], t["gpu0/gi14/ci7/access"]) == (12, 13, 137)
    assert t["gpu1/gi0/access"] == 138 and len(set(t.values())) == len(t)
    assert parse_minors("".join(f"{k} {v}\n" for k, v in t.items())) == t


@pytest.mark.skipif(not REAL.exists(), reason="docs/hardware/mig-minors-h200.txt not recorded")
def test_the_simulated_table_is_the_h200s_own():
    real = parse_minors(REAL.read_text())
    gpus = sorted({int(k[3:].split("/")[0]) for k in real if k.startswith("gpu")})
    assert real == standard_minors(gpus)


def test_files_name_the_device_they_reach():
    t = standard_minors([0, 1, 2])
    f = mig_files(t, 2, 3, 1)
    assert f == DeviceFiles(2, t["gpu2/gi3/access"], t["gpu2/gi3/ci1/access"])
    assert owner(t, list(f.paths("/root"))) == (2, 3, 1)
    assert owner(t, ["/x/dev/nvidia1"]) == (1, None, None)
    with pytest.raises(NotFoundError, match="lists no MIG instance with minor 9999"):
        owner(t, ["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap9999", "/dev/nvidia-caps/nvidia-cap4"])
    with pytest.raises(NotFoundError, match="needs both"):
        owner(t, ["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap3"])
    with pytest.raises(NotFoundError, match="not in the GPU instance"):
        owner(t, ["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap4"])
    with pytest.raises(NotFoundError, match="no /dev/nvidia<N>"):
        owner(t, ["/dev/nvidia-caps/nvidia-cap3", "/dev/nvidia-caps/nvidia-cap4"])
    with pytest.raises(NotFoundError, match="mig-minors has no gpu0/gi15/access"):
        mig_files(t, 0, 15, 0)


def test_a_missing_driver_file_is_said(tmp_path):
    with pytest.raises(NotFoundError, match="is missing: the NVIDIA driver is not loaded"):
        read_minors(tmp_path / "mig-minors")


def test_backends_give_minors():
    b = SimulatedBackend("A100-80GB:2")
    assert [g.device_minor for g in b.gpus()] == [0, 1]
    assert b.mig_minors() == standard_minors([0, 1])
