"""The CLI through its real entry point (`python -m migpool`, the same code as the `migpool` script)."""

import json
import os
import subprocess
import sys

import pytest


def mp(*args, env=None, check=None):
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    r = subprocess.run([sys.executable, "-m", "migpool", *args], capture_output=True, text=True, env=e)
    if check is not None:
        assert r.returncode == check, (r.stdout, r.stderr)
    return r


def test_gpus_profiles_json():
    r = mp("gpus", "--simulate", "H100-80GB:2", "--json", check=0)
    gpus = json.loads(r.stdout)
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3"] * 2 and gpus[0]["mig_current"] is False
    prof = json.loads(mp("profiles", "--simulate", "H100-80GB", "--json", check=0).stdout)[0]["profiles"]
    p3 = next(p for p in prof if p["name"] == "3g.40gb")
    assert p3["placements"] == "{0,4}:4" and p3["free"] == 2 and p3["id"] == 9


def test_plan_apply_status_assert_export_teardown():
    sim = ["--simulate", "A100-80GB"]
    r = mp("plan", "3g.40gb", "-n", "2", *sim, check=0)
    assert "create   3g.40gb" in r.stdout and "■■■■····  0:4" in r.stdout and "5 operation(s)" in r.stdout
    r = mp("apply", "3g.40gb:1,1g.10gb:3", *sim, "--json", check=0)
    out = json.loads(r.stdout)
    assert len(out["mig_devices"]) == 4 and all(u.startswith("MIG-") for u in out["mig_devices"])
    r = mp("status", *sim, check=0)
    wide = mp("status", *sim, "--wide", check=0)
    for u in out["mig_devices"]:
        assert u not in r.stdout and u[:12] + "…" in r.stdout  # shortened in the table
        assert u in wide.stdout  # full with --wide
    assert mp("assert", "3g.40gb:1,1g.10gb:3", *sim).returncode == 0
    r = mp("assert", "3g.40gb", "-n", "2", *sim)
    assert r.returncode == 1 and "3g.40gb: want 2, have 1" in r.stdout
    r = mp("export", *sim, "-c", "saved", check=0)
    assert "mig-configs:" in r.stdout and "3g.40gb: 1" in r.stdout
    assert mp("apply", "3g.40gb:1,1g.10gb:3", *sim, check=0).stdout.startswith("Nothing to do")
    mp("teardown", "--restore", *sim, check=0)
    assert json.loads(mp("gpus", *sim, "--json").stdout)[0]["mig_current"] is False


def test_apply_from_a_mig_parted_file(tmp_path):
    f = tmp_path / "config.yaml"
    f.write_text(
        "version: v1\nmig-configs:\n  all-3g.40gb:\n    - devices: all\n      mig-enabled: true\n"
        '      mig-devices:\n        "3g.40gb": 2\n'
    )
    mp("apply", "-f", str(f), "-c", "all-3g.40gb", "--simulate", "A100-80GB:2", check=0)
    assert mp("assert", "3g.40gb", "-n", "2", "--simulate", "A100-80GB:2").returncode == 0


def test_off_turns_mig_off_on_the_gpus_given_and_takes_no_count():
    sim = ("--simulate", "A100-80GB:2")
    mp("apply", "3g.40gb", "-n", "2", *sim, check=0)
    mp("apply", "off", "--gpu", "1", *sim, check=0)
    gpus = json.loads(mp("gpus", "--json", *sim, check=0).stdout)
    assert [g["mig_current"] for g in gpus] == [True, False]
    assert mp("assert", "off", "--gpu", "1", *sim).returncode == 0
    assert mp("assert", "off", "--gpu", "0", *sim).returncode == 1
    r = mp("apply", "off", "-n", "2", *sim)
    assert r.returncode == 2 and "`off` (MIG off: a whole GPU) takes no -n" in r.stderr


def test_environment_variable_selects_the_simulator():
    r = mp("gpus", "--json", env={"MIGPOOL_SIMULATE": "A30-24GB"}, check=0)
    assert json.loads(r.stdout)[0]["name"] == "NVIDIA A30"


@pytest.mark.parametrize(
    "args,msg",
    [
        (["apply", "3g.20gb", "-n", "2"], "did you mean '3g.40gb'"),
        (["apply", "3g.40gb", "-n", "3"], "cannot fit 3×3g.40gb"),
        (["gpus", "--gpu", "7"], "no GPU '7'"),
        (["apply", "-f", "/nonexistent.yaml"], "cannot read /nonexistent.yaml"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, msg):
    r = mp(*args, "--simulate", "A100-80GB", check=2)
    assert msg in r.stderr and "Traceback" not in r.stderr and r.stderr.startswith("error:")


def test_read_only_apply_refuses_and_changes_nothing():
    r = mp("apply", "3g.40gb", "-n", "2", "--simulate", "A100-80GB", env={"MIGPOOL_READ_ONLY": "1"}, check=2)
    assert "MIGPOOL_READ_ONLY is set" in r.stderr and "enable-mig" in r.stderr
    plan = mp("plan", "3g.40gb", "-n", "2", "--simulate", "A100-80GB", env={"MIGPOOL_READ_ONLY": "1"}, check=0)
    assert "5 operation(s)" in plan.stdout  # planning changes nothing, so read-only mode allows it
    dry = mp(
        "apply", "3g.40gb", "-n", "2", "--dry-run", "--simulate", "A100-80GB", env={"MIGPOOL_READ_ONLY": "1"}, check=0
    )
    assert "create-gi 3g.40gb at 4:4" in dry.stdout
    assert json.loads(mp("gpus", "--simulate", "A100-80GB", "--json").stdout)[0]["mig_current"] is False


def test_catalog_commands():
    assert "A100-80GB" in mp("catalog", check=0).stdout
    shown = json.loads(mp("catalog", "show", "H100", "--json", check=0).stdout)
    assert shown["key"] == "H100-80GB"
    assert "matches the catalog" in mp("catalog", "check", "--simulate", "B200", check=0).stdout
