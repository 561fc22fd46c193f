"""migpool.reconcile.persist, .service: saved layout and hooks files; regressions (once broke migpool or a newcomer)."""

from __future__ import annotations

import os

import pytest
from damaged_files import DAMAGE
from migpool_cli import mp
from migpool_cli import one_error_line as _one_error_line
from migpool_cli import run as _cli


@pytest.mark.parametrize("damage", [*DAMAGE, "mig-devices: null"])
def test_a_damaged_saved_layout_or_hooks_file_is_refused(monkeypatch, tmp_path, damage):
    import os

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    saved = tmp_path / "config.yaml"
    good = b"version: v1\nmig-configs:\n  default:\n    - devices: all\n      mig-enabled: true\n"
    if damage == "mig-devices: null":
        saved.write_bytes(good + b"      mig-devices: null\n")
    else:
        saved.write_bytes(DAMAGE[damage])
    r = _cli("boot", "--dry-run", "--config-file", str(saved), env=dict(os.environ))
    _one_error_line(r, saved)
    if damage != "mig-devices: null":
        hooks = tmp_path / "hooks.yaml"
        hooks.write_bytes(DAMAGE[damage])
        saved.write_bytes(good + b'      mig-devices: {"3g.40gb": 2}\n')
        _one_error_line(_cli("boot", "--hooks", str(hooks), "--config-file", str(saved), env=dict(os.environ)), hooks)


def test_a_simulated_machine_saves_its_layout_beside_its_state_never_in_etc(tmp_path):
    sim = ["--simulate", "H100-80GB"]
    r = mp("apply", "2g.20gb:1", "--persist", *sim, check=0)
    saved = r.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    assert saved.startswith(os.environ["MIGPOOL_STATE_DIR"]) and not saved.startswith("/etc")
    mp("sim", "reboot", *sim, check=0)
    assert "now 2g.20gb@0:2" in mp("boot", *sim, check=0).stdout  # boot reads it from there
    unit = mp("install-service", "--dry-run", env={"MIGPOOL_SIMULATE": "H100-80GB"}, check=0)
    assert f"--config-file {saved}" in unit.stdout and saved in unit.stderr
    mine = tmp_path / "mine.yaml"
    unit = mp("install-service", "--dry-run", env={"MIGPOOL_CONFIG_FILE": str(mine)}, check=0)
    assert f"--config-file {mine}" in unit.stdout
