"""migpool.backend.simulated: spec and state file refusals; regressions (once broke migpool or a newcomer)."""

from __future__ import annotations

import pytest
from damaged_files import DAMAGE
from migpool_cli import mp
from migpool_cli import one_error_line as _one_error_line
from migpool_cli import run as _cli


@pytest.mark.parametrize("damage", [*DAMAGE, "wrong types"])
def test_a_damaged_simulated_state_file_is_refused(monkeypatch, sim, damage):
    import os

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    b = sim()
    b.gpus()
    b.path.write_bytes(b'{"gpus": [{"gis": 3}]}' if damage == "wrong types" else DAMAGE[damage])
    _one_error_line(_cli("status", env=dict(os.environ)), b.path)


def test_a_simulated_machine_has_a_bounded_number_of_gpus(monkeypatch):
    import os

    from migpool.backend.simulated import MAX_GPUS

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB:999999")
    r = _cli("gpus", env=dict(os.environ))
    assert r.returncode == 2 and f"more than {MAX_GPUS} GPUs" in r.stderr


def test_an_ambiguous_simulated_model_is_refused_with_the_choices():
    r = mp("gpus", "--simulate", "A100")
    assert r.returncode == 2 and "A100-40GB and A100-80GB" in r.stderr and "--simulate A100-80GB" in r.stderr
    assert mp("gpus", "--simulate", "A100-40GB").returncode == 0
