"""What migpool applied on a machine: each GPU's state before migpool first changed it, and the
instances migpool created, so `teardown` removes only those and `restore` returns the GPU as it was."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import Placement
from .locks import PathLock


@dataclass(frozen=True)
class InstanceRecord:
    profile: str
    start: int
    size: int

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)


class Journal:
    """A JSON file beside the apply lock, keyed by GPU UUID. Changes to different GPUs run at once (each under its
    GPU's lock), so every update of the file is made under the journal's own lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """The journal's content, written back when the block ends (unless the block raises)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with PathLock(str(self.path) + ".lock"):
            data = self._load()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                self._save(data)

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
        with self._update() as data:
            if gpu_uuid not in data:
                data[gpu_uuid] = dict(
                    prior=dict(mig_enabled=mig_enabled, instances=[vars(i) for i in instances]), created=[]
                )

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
        with self._update() as data:
            rec = data.setdefault(gpu_uuid, dict(prior=dict(mig_enabled=False, instances=[]), created=[]))
            if vars(inst) not in rec["created"]:
                rec["created"].append(vars(inst))

    def remove_created(self, gpu_uuid: str, inst: InstanceRecord) -> None:
        with self._update() as data:
            rec = data.get(gpu_uuid)
            if rec and vars(inst) in rec["created"]:
                rec["created"].remove(vars(inst))

    def forget(self, gpu_uuid: str) -> None:
        with self._update() as data:
            data.pop(gpu_uuid, None)
