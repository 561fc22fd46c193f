"""What migpool applied on a machine: each GPU's state before migpool first changed it, and the
instances migpool created, so `teardown` removes only those and `restore` returns the GPU as it was."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DamagedFileError
from ..mig.catalog import Placement
from .locks import PathLock
from .safefiles import atomic_write, read_text


@dataclass(frozen=True)
class InstanceRecord:
    """A GPU instance: its profile and placement, and the sizes of its compute instances where they are not one
    that takes the whole GPU instance (None)."""

    profile: str
    start: int
    size: int
    cis: list[int] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(profile=self.profile, start=self.start, size=self.size)
        if self.cis is not None:
            out["cis"] = list(self.cis)
        return out

    def same_instance(self, other: InstanceRecord) -> bool:
        return (self.profile, self.start, self.size) == (other.profile, other.start, other.size)

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)


class Journal:
    """A JSON file keyed by GPU UUID (statedirs.py says where). Changes to different GPUs run at once (each under
    its GPU's lock), so every update of the file is made under the journal's own lock. A damaged journal is
    refused (DamagedFileError), never read as empty: the GPUs' prior states would be lost."""

    def __init__(self, path: Path, lock: Path) -> None:
        self.path = path
        self.lock = lock

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """The journal's content, written back when the block ends (unless the block raises)."""
        with PathLock(self.lock):
            data = self._load()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                atomic_write(self.path, json.dumps(data, indent=1))

    def _load(self) -> dict[str, Any]:
        try:
            text = read_text(self.path)
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise self._damaged(f"it cannot be read as text: {e}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise self._damaged("it is empty" if not text.strip() else f"it is not JSON ({e})") from None
        problem = _journal_problem(data)
        if problem:
            raise self._damaged(problem)
        return data

    def _damaged(self, what: str) -> DamagedFileError:
        return DamagedFileError(
            f"migpool's journal {self.path} is damaged: {what}. It holds each GPU's state before migpool changed "
            "it, so migpool changes nothing until it can be read: restore it from a backup, or move it aside "
            "(migpool then treats every GPU as never changed by it)"
        )

    def remember_prior(self, gpu_uuid: str, mig_enabled: bool, instances: list[InstanceRecord]) -> None:
        with self._update() as data:
            if gpu_uuid not in data:
                data[gpu_uuid] = dict(
                    prior=dict(mig_enabled=mig_enabled, instances=[i.as_json() for i in instances]), created=[]
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
            if inst.as_json() not in rec["created"]:
                rec["created"].append(inst.as_json())

    def remove_created(self, gpu_uuid: str, inst: InstanceRecord) -> None:
        with self._update() as data:
            rec = data.get(gpu_uuid)
            if rec and inst.as_json() in rec["created"]:
                rec["created"].remove(inst.as_json())

    def forget(self, gpu_uuid: str) -> None:
        with self._update() as data:
            data.pop(gpu_uuid, None)


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _instances_problem(items: Any, where: str) -> str | None:
    if not isinstance(items, list):
        return f"{where} is not a list"
    for i in items:
        if not (
            isinstance(i, dict)
            and set(i) - {"cis"} == {"profile", "start", "size"}
            and isinstance(i["profile"], str)
            and all(_count(i[k]) for k in ("start", "size"))
            and (isinstance(i.get("cis", []), list) and all(_count(c) and c > 0 for c in i.get("cis", [])))
        ):
            return f"{where} holds {str(i)[:60]!r}, not {{profile: str, start: int, size: int[, cis: [int]]}}"
    return None


def _journal_problem(data: Any) -> str | None:
    """What is wrong with the journal's JSON, or None."""
    if not isinstance(data, dict):
        kind = "null" if data is None else "list" if isinstance(data, list) else type(data).__name__
        return f"it holds a JSON {kind}, not an object keyed by GPU UUID"
    for uuid, rec in data.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("prior"), dict) or "created" not in rec:
            return f"the entry of {uuid} is not {{prior: {{...}}, created: [...]}}"
        if not isinstance(rec["prior"].get("mig_enabled"), bool):
            return f"{uuid}'s prior mig_enabled is not true or false"
        problem = _instances_problem(rec["prior"].get("instances"), f"{uuid}'s prior instances") or (
            _instances_problem(rec["created"], f"{uuid}'s created instances")
        )
        if problem:
            return problem
    return None
