"""What a newcomer hit on a first hour with migpool, each fixed and held by a test: usage errors as one line,
--json where data is printed, 80 columns, the simulated saved layout beside the simulated state, an ambiguous
simulated model, a missing extra, operator slips, apply's new partitions, long lists of names."""

import importlib.util
import json
import os

import pytest
import yaml
from test_cli import mp

import migpool as sky
from migpool.integrations import migparted


def test_a_usage_error_is_one_error_line_with_exit_2():
    for args in (["apply", "--bogus"], ["nosuch"], ["plan"], ["apply", "3g.40gb", "-n", "two"]):
        r = mp(*args, "--simulate", "A100-80GB") if args[0] != "nosuch" else mp(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
        assert "--help" in lines[0] and "Usage:" not in r.stdout + r.stderr


def test_catalog_and_sim_reboot_print_json():
    models = json.loads(mp("catalog", "--json", check=0).stdout)
    assert {"A100-80GB", "H200-141GB"} <= {m["key"] for m in models}
    out = json.loads(mp("sim", "reboot", "--simulate", "H100-80GB:2", "--json", check=0).stdout)
    assert out["rebooted"] == "H100-80GB:2" and out["gpu_instances"] == 0


def test_export_comments_and_the_catalog_note_fit_80_columns():
    sim = ["--simulate", "A100-80GB:2"]
    mp("apply", "3g.40gb:1,1g.10gb:2", "--gpu", "0", *sim, check=0)
    for fmt in ("--slurm", "--k8s"):
        out = mp("export", fmt, *sim, check=0, env={"COLUMNS": "80"}).stdout
        long = [ln for ln in out.splitlines() if len(ln) > 80]
        # a gres.conf record must stay on one line: only those may be longer, never a comment
        assert all(ln.startswith("NodeName=") and "#" not in ln for ln in long), long
    note = mp("catalog", check=0, env={"COLUMNS": "80"}).stderr
    assert "note:" in note and all(len(ln) <= 80 for ln in note.splitlines())


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


def test_an_ambiguous_simulated_model_is_refused_with_the_choices():
    r = mp("gpus", "--simulate", "A100")
    assert r.returncode == 2 and "A100-40GB and A100-80GB" in r.stderr and "--simulate A100-80GB" in r.stderr
    assert mp("gpus", "--simulate", "A100-40GB").returncode == 0


def test_ray_without_ray_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(sky.PluginError, match=r"pip install 'migpool\[ray\]'"):
        sky.Ray()


@sky.function
def one(x):
    return x


def plain(x):
    return x


def test_operator_slips_say_the_fix():
    with sky.Compute(provider=sky.Local(), progress=False) as c:
        with pytest.raises(TypeError, match=r"write `\(a & b\) >> pool`"):
            one(1) & one(2) >> c
        with pytest.raises(TypeError, match="@migpool.function"):
            plain(1) >> c
        with pytest.raises(TypeError, match="@migpool.function"):
            plain(1) @ c
        assert (one(1) & one(2)) >> c == (1, 2)


def test_apply_lists_each_new_partition_with_gpu_profile_and_placement():
    sim = ["--simulate", "A100-80GB"]
    out = mp("apply", "3g.40gb:1,1g.10gb:2", *sim, check=0, env={"COLUMNS": "80"}).stdout
    rows = [ln.split() for ln in out.splitlines() if "MIG-" in ln]
    assert sorted((r[0], r[1]) for r in rows) == [("0", "1g.10gb"), ("0", "1g.10gb"), ("0", "3g.40gb")]
    assert {r[2] for r in rows if r[1] == "3g.40gb"} <= {"0:4", "4:4"}
    data = json.loads(mp("apply", "2g.20gb:1", *sim, "--json", check=0).stdout)
    assert [p["profile"] for p in data["partitions"]] == ["2g.20gb"] and data["partitions"][0]["uuid"].startswith(
        "MIG-"
    )


def test_a_long_list_of_names_is_cut(tmp_path):
    f = tmp_path / "many.yaml"
    configs = {f"c{k}": [{"devices": "all", "mig-enabled": False}] for k in range(10_000)}
    f.write_text(yaml.safe_dump({"version": "v1", "mig-configs": configs}))
    with pytest.raises(sky.MigpoolError) as e:
        migparted.load(str(f), None)
    assert "… and 9,990 more" in str(e.value) and len(str(e.value)) < 300
    r = mp("apply", "-f", str(f), "--simulate", "A100-80GB")
    assert r.returncode == 2 and len(r.stderr) < 400 and "9,990 more" in r.stderr
