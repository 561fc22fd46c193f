"""What migpool applied on a machine: each GPU's state before migpool first changed it, and the
instances migpool created, so `teardown` removes only those and `restore` returns the GPU as it was.

It is written ahead: before an apply changes anything, one synced write (`begin`) records each GPU's prior state
and the instances the run will create and destroy (its `pending` change); the run itself writes nothing, and its
end folds the pending change in (`commit`) or drops it after a rollback (`abandon`). A run killed midway leaves
its pending change, which `created` counts (an instance it lists exists only if the run made it) and the next
`begin` settles against what the GPU holds. A full disk thus stops an apply before its first change."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DamagedFileError, LockTimeoutError
from ..mig.catalog import Placement
from ..mig.instance import InstanceKey, instance_key
from ..mig.planner import PlannedInstance
from .locks import LockTimeout, PathLock
from .safefiles import atomic_write, read_text


@dataclass(frozen=True)
class InstanceRecord:
    """A GPU instance: its profile and placement, and the sizes of its compute instances where they are not one
    that takes the whole GPU instance (None)."""

    profile: str
    start: int
    size: int
    cis: list[int] | None = None

    @classmethod
    def at(cls, profile: str, placement: Placement, cis: Sequence[int] | None = None) -> InstanceRecord:
        """The record of a GPU instance of `profile` at `placement`; `cis` as the record keeps them."""
        return cls(profile, placement.start, placement.size, None if cis is None else list(cis))

    @classmethod
    def of(cls, instance: PlannedInstance, cis: Sequence[int] | None = None) -> InstanceRecord:
        """The record of a planned (or present) GPU instance."""
        return cls.at(instance.profile.name, instance.placement, cis)

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> InstanceRecord:
        """A record as `as_json` wrote it (the journal's load has checked its fields)."""
        return cls(item["profile"], item["start"], item["size"], item.get("cis"))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(profile=self.profile, start=self.start, size=self.size)
        if self.cis is not None:
            out["cis"] = list(self.cis)
        return out

    def same_instance(self, other: InstanceRecord | PlannedInstance) -> bool:
        """The same GPU instance (its profile and placement), whatever its compute instances."""
        return self.key == other.key

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)

    @property
    def key(self) -> InstanceKey:
        return instance_key(self.profile, self.placement)


@dataclass(frozen=True)
class Intent:
    """What one apply will do to one GPU, recorded before it starts: the GPU's MIG mode and instances now
    (`present`, its prior state if migpool never changed it), and the instances it will create and destroy."""

    gpu_uuid: str
    mig_enabled: bool
    present: list[InstanceRecord]
    create: list[InstanceRecord]
    destroy: list[InstanceRecord]


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
        lock = PathLock(self.lock)
        try:
            lock.acquire()
        except LockTimeout as e:
            raise LockTimeoutError(f"migpool's journal lock {e.path} was held too long by {e.who()}") from None
        try:
            data = self._load()
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                atomic_write(self.path, json.dumps(data, indent=1))
        finally:
            lock.release()

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

    def prior(self, gpu_uuid: str) -> tuple[bool, list[InstanceRecord]] | None:
        rec = self._load().get(gpu_uuid)
        if not rec:
            return None
        p = rec["prior"]
        return p["mig_enabled"], [InstanceRecord.from_json(i) for i in p["instances"]]

    def created(self, gpu_uuid: str) -> list[InstanceRecord]:
        """The instances migpool created on the GPU, and those a pending (unfinished) run was to create: each
        that exists was made by migpool."""
        rec = self._load().get(gpu_uuid)
        if not rec:
            return []
        out = [InstanceRecord.from_json(i) for i in rec["created"]]
        return out + [r for r in _records(rec, "create") if r.key not in {o.key for o in out}]

    def begin(self, intents: list[Intent]) -> None:
        """Record, in one synced write, each GPU's prior state (where it is not recorded yet) and what this run
        will create and destroy. A pending change of an earlier run that never ended is settled first against
        what the GPU holds now. Raises OSError when it cannot be written (a full disk): nothing is changed then."""
        with self._update() as data:
            for it in intents:
                rec = data.setdefault(
                    it.gpu_uuid,
                    dict(
                        prior=dict(mig_enabled=it.mig_enabled, instances=[i.as_json() for i in it.present]), created=[]
                    ),
                )
                _settle(rec, {r.key for r in it.present})
                rec["pending"] = dict(
                    create=[i.as_json() for i in it.create], destroy=[i.as_json() for i in it.destroy]
                )

    def commit(self, gpu_uuids: list[str]) -> None:
        """The run that `begin` recorded has ended: what it created is created, what it destroyed is gone."""
        with self._update() as data:
            for uuid in gpu_uuids:
                rec = data.get(uuid)
                if rec and "pending" in rec:
                    gone = {r.key for r in _records(rec, "destroy")}
                    kept = [i for i in rec["created"] if InstanceRecord.from_json(i).key not in gone]
                    have = {InstanceRecord.from_json(i).key for i in kept}
                    rec["created"] = kept + [r.as_json() for r in _records(rec, "create") if r.key not in have]
                    del rec["pending"]

    def abandon(self, gpu_uuids: list[str]) -> None:
        """The run that `begin` recorded was rolled back whole: its pending change is dropped."""
        with self._update() as data:
            for uuid in gpu_uuids:
                rec = data.get(uuid)
                if rec:
                    rec.pop("pending", None)

    def forget(self, gpu_uuid: str) -> None:
        with self._update() as data:
            data.pop(gpu_uuid, None)


def _records(rec: dict[str, Any], which: str) -> list[InstanceRecord]:
    return [InstanceRecord.from_json(i) for i in rec.get("pending", {}).get(which, [])]


def _settle(rec: dict[str, Any], present: set[InstanceKey]) -> None:
    """Fold a pending change whose run never ended into `created`, by what the GPU holds (`present`): what it was
    to create and exists was made by it; what it was to destroy and is gone, it destroyed."""
    if "pending" not in rec:
        return
    gone = {r.key for r in _records(rec, "destroy") if r.key not in present}
    kept = [i for i in rec["created"] if InstanceRecord.from_json(i).key not in gone]
    have = {InstanceRecord.from_json(i).key for i in kept}
    made = [r.as_json() for r in _records(rec, "create") if r.key in present and r.key not in have]
    rec["created"] = kept + made
    del rec["pending"]


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
        if "pending" in rec:
            pending = rec["pending"]
            if not isinstance(pending, dict) or set(pending) != {"create", "destroy"}:
                return f"{uuid}'s pending change is not {{create: [...], destroy: [...]}}"
            problem = _instances_problem(pending["create"], f"{uuid}'s pending creations") or (
                _instances_problem(pending["destroy"], f"{uuid}'s pending destructions")
            )
            if problem:
                return problem
    return None
