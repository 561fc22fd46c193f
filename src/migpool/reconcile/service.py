"""The boot service: a systemd unit that runs `migpool boot`, and the hooks file of services to stop around a
change (mig-parted's hooks idea: the GPU's clients are stopped only when the GPUs actually need a change).

The hooks file (/etc/migpool/hooks.yaml):

    version: v1
    stop-before-change: [nvidia-dcgm.service, nvidia-persistenced.service]

Before the first change, the listed services that are active are stopped in that order; after the change
(also after a failed one) they are started again in the reverse order.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ConfigError, MigpoolError
from ..integrations.migparted import yaml_problem

UNIT_NAME = "migpool.service"
DEFAULT_UNIT_DIR = "/etc/systemd/system"
DEFAULT_HOOKS_FILE = "/etc/migpool/hooks.yaml"
# The GPU's usual clients, which must find the layout in place when they start (they are ordered after us;
# a unit that does not exist on a machine is simply ignored by systemd).
CLIENTS = (
    "kubelet.service",
    "nvidia-dcgm.service",
    "dcgm.service",
    "nvidia-device-plugin.service",
    "dcgm-exporter.service",
    "slurmd.service",
)


class ServiceError(MigpoolError):
    """A service could not be stopped or started around a change."""


def _quote(arg: str) -> str:
    """An argument as systemd's ExecStart= splits words (it is no shell: only quotes and backslashes matter)."""
    if arg and all(c.isalnum() or c in "/._-=:+@," for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def boot_command(config_file: Path, hooks_file: Path | None) -> list[str]:
    """The argv the unit runs: this Python running migpool, so the unit uses the install it was made from."""
    argv = [sys.executable, "-m", "migpool", "boot", "--config-file", str(config_file)]
    if hooks_file is not None:
        argv += ["--hooks", str(hooks_file)]
    return argv


def unit_text(config_file: Path, hooks_file: Path | None) -> str:
    clients = " ".join(CLIENTS)
    return f"""[Unit]
Description=Apply the saved NVIDIA MIG layout (migpool boot)
# after the NVIDIA driver is loaded, before the services that open the GPU
After=systemd-modules-load.service nvidia-persistenced.service
Before={clients}
ConditionPathExists={config_file}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={" ".join(_quote(a) for a in boot_command(config_file, hooks_file))}
StandardOutput=journal
StandardError=journal
SyslogIdentifier=migpool

[Install]
WantedBy=multi-user.target
"""


def hooks_text(services: Sequence[str]) -> str:
    return (
        "# Services migpool stops before changing the GPUs (in this order, only if active and only when a change\n"
        "# is needed) and starts again afterwards (in reverse order).\n"
        + yaml.safe_dump({"version": "v1", "stop-before-change": list(services)}, sort_keys=False)
    )


def load_hooks(path: Path) -> list[str]:
    """The services of a hooks file; a missing, unreadable or malformed file is refused, naming it."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the hooks file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"the hooks file {path} is not valid YAML: {yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"the hooks file {path} is not a text file (byte {e.start} is not UTF-8)") from None
    services = data.get("stop-before-change") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("version") != "v1"
        or not isinstance(services, list)
        or not all(isinstance(s, str) and s for s in services)
    ):
        raise ConfigError(f"the hooks file {path} must hold 'version: v1' and 'stop-before-change: [unit, ...]'")
    return services


@dataclass
class Systemctl:
    """Runs systemctl with argv lists (no shell)."""

    run: Callable[[list[str]], int] = lambda argv: subprocess.run(argv, check=False).returncode

    def is_active(self, unit: str) -> bool:
        return self.run(["systemctl", "is-active", "--quiet", unit]) == 0

    def stop(self, unit: str) -> None:
        if self.run(["systemctl", "stop", unit]) != 0:
            raise ServiceError(f"could not stop {unit} before changing the GPUs (systemctl stop {unit} failed)")

    def start(self, unit: str) -> bool:
        return self.run(["systemctl", "start", unit]) == 0


@contextlib.contextmanager
def services_stopped(services: Sequence[str], systemctl: Systemctl, log: Callable[[str], None]) -> Iterator[None]:
    """Stop the active ones of `services` (in order), then start them again in reverse order, whatever happens."""
    stopped: list[str] = []
    try:
        for unit in services:
            if systemctl.is_active(unit):
                log(f"stopping {unit} for the change")
                systemctl.stop(unit)
                stopped.append(unit)
        yield
    finally:
        for unit in reversed(stopped):
            log(f"starting {unit} again")
            if not systemctl.start(unit):
                log(f"could not start {unit} again: start it by hand (systemctl start {unit})")


def install(unit_dir: Path, config_file: Path, hooks_file: Path | None, services: Sequence[str]) -> list[Path]:
    """Write the unit (and the hooks file when services are named); returns the files written."""
    written = []
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / UNIT_NAME
    unit.write_text(unit_text(config_file, hooks_file if services else None))
    written.append(unit)
    if services and hooks_file is not None:
        hooks_file.parent.mkdir(parents=True, exist_ok=True)
        hooks_file.write_text(hooks_text(services))
        written.append(hooks_file)
    return written


def uninstall(unit_dir: Path, hooks_file: Path) -> list[Path]:
    removed = []
    for path in (unit_dir / UNIT_NAME, hooks_file):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def systemctl_available() -> bool:
    return shutil.which("systemctl") is not None
