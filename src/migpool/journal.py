"""What migpool applied on a machine: each GPU's state before migpool first changed it, and the
instances migpool created, so `teardown` removes only those and `restore` returns the GPU as it was."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import Placement


@dataclass(frozen=True)
class InstanceRecord:
    profile: str
    start: int
    size: int

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)


class Journal:
    """A JSON file beside the apply lock, keyed by GPU UUID."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def remember_prior(self, gpu_uuid: str, mig_enabled: bool, instances: list[InstanceRecord]) -> None:
        data = self._load()
        if gpu_uuid not in data:
            data[gpu_uuid] = dict(prior=dict(mig_enabled=mig_enabled, instances=[vars(i) for i in instances]), created=[])
            self._save(data)

    def prior(self, gpu_uuid: str) -> tuple[bool, list[InstanceRecord]] | None:
        rec = self._load().get(gpu_uuid)
        if not rec:
            return None
        p = rec["prior"]
        return p["mig_enabled"], [InstanceRecord(**i) for i in p["instances"]]

    def created(self, gpu_uuid: str) -> list[InstanceRecord]:
        rec = self._load().get(gpu_uuid)
        return [InstanceRecord(**i) for i in rec["created"]] if rec else []

    def add_created(self, gpu_uuid: str, inst: InstanceRecord) -> None:
        data = self._load()
        rec = data.setdefault(gpu_uuid, dict(prior=dict(mig_enabled=False, instances=[]), created=[]))
        if vars(inst) not in rec["created"]:
            rec["created"].append(vars(inst))
        self._save(data)

    def remove_created(self, gpu_uuid: str, inst: InstanceRecord) -> None:
        data = self._load()
        rec = data.get(gpu_uuid)
        if rec and vars(inst) in rec["created"]:
            rec["created"].remove(vars(inst))
            self._save(data)

    def forget(self, gpu_uuid: str) -> None:
        data = self._load()
        if data.pop(gpu_uuid, None) is not None:
            self._save(data)
