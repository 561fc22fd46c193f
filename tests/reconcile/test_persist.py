"""The layout survives a reboot (persist, boot, the systemd unit, hooks) and the schedulers are told (exports)."""

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from migpool import SimulatedBackend
from migpool.cli import commands as cli
from migpool.reconcile import core as reconcile
from migpool.reconcile import persist, service

SIM = "A100-80GB:2"


def mp(*args, env=None):
    r = CliRunner().invoke(
        cli.main,
        [*args, "--simulate", SIM] if args[0] not in ("install-service", "uninstall-service") else list(args),
        env={"COLUMNS": "80", **(env or {})},
    )
    return r


def unwrapped(output):
    """The output with its lines joined: a long path is folded at the terminal's 80 columns."""
    return output.replace("\n", "")


def placements(b, gpu):
    return sorted(str(a.instance) for a in reconcile.actual_instances(b, gpu)) if b.gpu(gpu).mig_current else None


def test_persist_reboot_boot_restores_the_same_layout(tmp_path):
    cfg = tmp_path / "etc" / "config.yaml"
    b = SimulatedBackend(SIM)
    r = mp("apply", "3g.40gb:1,1g.10gb:4", "--gpu", "0", "--persist", "--config-file", str(cfg))
    assert r.exit_code == 0, r.output
    before = placements(b, 0)
    assert len(before) == 5 and "devices:\n    - 0\n" in cfg.read_text()  # only GPU 0 is saved, not `all`
    assert mp("sim", "reboot").exit_code == 0
    assert placements(b, 0) == [] and b.gpu(0).mig_current  # instances gone, MIG mode kept
    r = mp("boot", "--config-file", str(cfg))
    assert r.exit_code == 0, r.output
    assert placements(b, 0) == before and not b.gpu(1).mig_current  # GPU 1 untouched
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"migpool boot: GPU 0 ({b.gpu(0).uuid}): 10 operation(s), now ")
    again = mp("boot", "--config-file", str(cfg))
    assert again.exit_code == 0 and "matches the saved layout" in again.output


def test_boot_after_a_reboot_that_applies_a_pending_mode(tmp_path):
    cfg = tmp_path / "config.yaml"
    b = SimulatedBackend(SIM)
    b.set_reset_blockers(0, ["nvidia-persistenced"])
    assert mp("apply", "2g.20gb", "-n", "3", "--gpu", "0", "--persist", "--config-file", str(cfg)).exit_code == 0
    assert not b.gpu(0).mig_current  # enable pending a reset: nothing created yet
    assert "2g.20gb: 3" in cfg.read_text()  # the desired layout is saved
    b.set_reset_blockers(0, [])
    mp("sim", "reboot")
    assert mp("boot", "--config-file", str(cfg)).exit_code == 0
    assert placements(b, 0) == ["2g.20gb@0:2", "2g.20gb@2:2", "2g.20gb@4:2"]


def test_persist_keeps_what_the_file_says_of_other_gpus(tmp_path):
    cfg = tmp_path / "config.yaml"
    mp("apply", "7g.80gb", "--gpu", "1", "--persist", "--config-file", str(cfg))
    mp("apply", "1g.10gb", "-n", "7", "--gpu", "0")
    r = mp("persist", "--gpu", "0", "--config-file", str(cfg))
    assert r.exit_code == 0 and str(cfg) in unwrapped(r.output)
    saved = persist.load(SimulatedBackend(SIM), cfg)
    assert saved.for_gpu(0).counts == (("1g.10gb", 7),) and saved.for_gpu(1).counts == (("7g.80gb", 1),)


@pytest.mark.parametrize(
    "text,msg",
    [
        ("version: v1\nmig-configs:\n  migpool: [", "not valid YAML"),
        ("version: v2\nmig-configs: {}\n", "unsupported version"),
        ("", "empty file"),
    ],
)
def test_a_corrupt_saved_layout_is_refused_naming_the_file(tmp_path, text, msg):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    r = mp("boot", "--config-file", str(cfg))
    assert r.exit_code == 2 and str(cfg) in unwrapped(r.output) and msg in r.output and "Traceback" not in r.output
    assert SimulatedBackend(SIM).operations() == 0
    missing = mp("boot", "--config-file", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2 and "no saved layout at" in missing.output and "migpool persist" in missing.output


def test_boot_in_read_only_mode_lists_what_it_would_do(tmp_path):
    cfg = tmp_path / "config.yaml"
    mp("apply", "3g.40gb", "-n", "2", "--persist", "--config-file", str(cfg))
    mp("sim", "reboot")
    b = SimulatedBackend(SIM)
    ops = b.operations()
    r = mp("boot", "--config-file", str(cfg), env={"MIGPOOL_READ_ONLY": "1"})
    assert r.exit_code == 0 and r.output.count("would run 4 operation(s)") == 2 and "MIGPOOL_READ_ONLY" in r.output
    assert "create-gi 3g.40gb at 0:4" in r.output and b.operations() == ops and placements(b, 0) == []


class FakeSystemctl(service.Systemctl):
    def __init__(self, active, fail_start=()):
        self.calls, self.active, self.fail_start = [], set(active), set(fail_start)
        super().__init__(run=self._run)

    def _run(self, argv):
        self.calls.append(argv[1:])
        verb, unit = argv[1], argv[-1]
        if verb == "is-active":
            return 0 if unit in self.active else 3
        if verb == "start" and unit in self.fail_start:
            return 1
        return 0


def test_hooks_stop_services_only_when_a_change_is_needed(tmp_path, monkeypatch):
    cfg, hooks = tmp_path / "config.yaml", tmp_path / "hooks.yaml"
    hooks.write_text(service.hooks_text(["nvidia-dcgm.service", "kubelet.service", "not-running.service"]))
    mp("apply", "3g.40gb", "-n", "2", "--persist", "--config-file", str(cfg))
    fake = FakeSystemctl(active={"nvidia-dcgm.service", "kubelet.service"})
    monkeypatch.setattr(service, "Systemctl", lambda: fake)
    assert mp("boot", "--config-file", str(cfg), "--hooks", str(hooks)).exit_code == 0
    assert fake.calls == []  # nothing to change: nothing stopped
    mp("sim", "reboot")
    r = mp("boot", "--config-file", str(cfg), "--hooks", str(hooks))
    assert r.exit_code == 0, r.output
    assert [c for c in fake.calls if c[0] != "is-active"] == [
        ["stop", "nvidia-dcgm.service"],
        ["stop", "kubelet.service"],
        ["start", "kubelet.service"],
        ["start", "nvidia-dcgm.service"],
    ]


def test_services_are_started_again_after_a_failed_change():
    fake = FakeSystemctl(active={"a.service", "b.service"}, fail_start={"a.service"})
    logged = []
    with pytest.raises(RuntimeError):
        with service.services_stopped(["a.service", "b.service"], fake, logged.append):
            raise RuntimeError("apply failed")
    assert [c for c in fake.calls if c[0] == "start"] == [["start", "b.service"], ["start", "a.service"]]
    assert any("could not start a.service again" in line for line in logged)


@pytest.mark.parametrize(
    "text", ["version: v1\n", "stop-before-change: [x]\n", "version: v1\nstop-before-change: x\n", "[:"]
)
def test_a_bad_hooks_file_is_refused(tmp_path, text):
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(text)
    cfg = tmp_path / "config.yaml"
    mp("persist", "--config-file", str(cfg))
    r = mp("boot", "--config-file", str(cfg), "--hooks", str(hooks))
    assert r.exit_code == 2 and str(hooks) in unwrapped(r.output)


def test_install_service_writes_a_unit_systemd_accepts(tmp_path):
    units, cfg, hooks = tmp_path / "units", tmp_path / "config.yaml", tmp_path / "hooks.yaml"
    dry = mp(
        "install-service",
        "--unit-dir",
        str(units),
        "--config-file",
        str(cfg),
        "--hooks-file",
        str(hooks),
        "--stop",
        "nvidia-dcgm.service",
        "--dry-run",
    )
    assert dry.exit_code == 0 and "Type=oneshot" in dry.output and "stop-before-change" in dry.output
    assert not units.exists()  # --dry-run writes nothing
    r = mp(
        "install-service",
        "--unit-dir",
        str(units),
        "--config-file",
        str(cfg),
        "--hooks-file",
        str(hooks),
        "--stop",
        "nvidia-dcgm.service",
        "--no-enable",
    )
    assert r.exit_code == 0, r.output
    unit = (units / "migpool.service").read_text()
    assert re.search(r"^ExecStart=\S+ -m migpool boot --config-file \S+ --hooks \S+$", unit, re.M)
    assert "Before=kubelet.service nvidia-dcgm.service" in unit and "After=systemd-modules-load.service" in unit
    assert service.load_hooks(hooks) == ["nvidia-dcgm.service"]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    v = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(units / "migpool.service")], capture_output=True, text=True
    )
    assert v.returncode == 0 and "migpool.service" not in v.stderr, v.stderr
    removed = mp("uninstall-service", "--unit-dir", str(units), "--hooks-file", str(hooks), "--no-enable")
    assert removed.exit_code == 0 and not (units / "migpool.service").exists() and not hooks.exists()


def test_export_saved_layout_for_schedulers(tmp_path):
    cfg = tmp_path / "config.yaml"
    mp("apply", "2g.20gb", "-n", "3", "--persist", "--config-file", str(cfg))
    mp("sim", "reboot")
    r = mp("export", "--slurm", "--saved", "--config-file", str(cfg), "--node-name", "n1")
    assert r.exit_code == 2 and "after it, or use --autodetect nvml" in r.output  # no device files yet
    r = mp("export", "--slurm", "--saved", "--config-file", str(cfg), "--node-name", "n1", "--autodetect", "nvml")
    assert "NodeName=n1 Gres=gpu:nvidia_a100_2g.20gb:6" in r.output
    k = json.loads(mp("export", "--k8s", "--saved", "--config-file", str(cfg), "--json").output)
    assert k["mixed"] == {"nvidia.com/mig-2g.20gb": 6} and k["single"] == {"nvidia.com/gpu": 6}
    assert k["node_label"] == {"nvidia.com/mig.config": "current"}
