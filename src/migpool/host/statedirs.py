"""Where migpool keeps the state of a machine's GPUs: the same for every caller on the machine, whatever their
home directory (the boot service as root, `sudo migpool apply`, a Ray worker of another user).

    runtime  /run/migpool      ($MIGPOOL_RUNTIME_DIR)  apply locks (locks/) and partition leases (leases/);
                                                        a reboot clears it, as it clears MIG instances
    data     /var/lib/migpool  ($MIGPOOL_DATA_DIR)     the journal of each GPU's state before migpool changed it

The saved layout that `migpool boot` applies is persist.py's /etc/migpool/config.yaml ($MIGPOOL_CONFIG_FILE).
A simulated machine keeps all of it beside its own state file, so tests and laptops need no root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .safefiles import checked_dir

RUNTIME_DIR_ENV = "MIGPOOL_RUNTIME_DIR"
DATA_DIR_ENV = "MIGPOOL_DATA_DIR"
DEFAULT_RUNTIME_DIR = "/run/migpool"
DEFAULT_DATA_DIR = "/var/lib/migpool"


@dataclass(frozen=True)
class StateDirs:
    runtime: Path
    data: Path

    def locks(self) -> Path:
        """The apply locks' directory (one lock file per GPU, and the journal's)."""
        return checked_dir(checked_dir(self.runtime, "migpool's runtime state") / "locks", "migpool's apply locks")

    def leases(self, write: bool = True) -> Path:
        """The partition leases' directory (one file per MIG device or GPU that a holder uses); checked and made
        when `write`, as it is (maybe missing) for a caller who only reads who holds what."""
        if not write:
            return self.runtime / "leases"
        return checked_dir(
            checked_dir(self.runtime, "migpool's runtime state") / "leases", "migpool's partition leases"
        )

    def journal(self) -> Path:
        """The journal's file (its directory checked)."""
        return checked_dir(self.data, "migpool's journal of prior GPU states") / "journal.json"

    def describe(self) -> dict[str, str]:
        return {
            "locks": str(self.runtime / "locks"),
            "leases": str(self.runtime / "leases"),
            "journal": str(self.data / "journal.json"),
        }


def system_dirs() -> StateDirs:
    """The machine-wide directories for real GPUs (each overridable for tests and containers)."""
    return StateDirs(
        Path(os.environ.get(RUNTIME_DIR_ENV) or DEFAULT_RUNTIME_DIR),
        Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR),
    )
