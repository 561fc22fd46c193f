"""Slurm's task prolog for MIG: the GPUs Slurm gave a job, as the UUIDs CUDA takes.

Slurm tells a job its GPUs as record numbers (`SLURM_JOB_GPUS=1,2`, and the same in CUDA_VISIBLE_DEVICES),
counting the node's gres.conf records in slurm.conf's type order, then in gres.conf's order. On a MIG GPU
CUDA cannot use such numbers. This prolog reads both files as slurmd does, finds each record's device
files, asks the driver's mig-minors which MIG device they reach, and prints
`export CUDA_VISIBLE_DEVICES=MIG-…,MIG-…` (Slurm's TaskProlog protocol: `export`, `unset` and `print`
lines on standard output). When it cannot tell, it hides every GPU from the job and says why: a job never
runs on a device it was not given.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..host.devicefiles import owner

DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
PROLOG = "migpool-slurm-prolog"
_COUNT = re.compile(r"^\d+[KMGTP]?$", re.IGNORECASE)


class PrologError(Exception):
    """Why the job's GPUs cannot be named."""


def hostlist(expr: str) -> list[str]:
    """Slurm's host list expression expanded: `gpu[01-03,07],login` -> gpu01 gpu02 gpu03 gpu07 login."""
    out: list[str] = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", expr):
        names = [""]
        for text, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", item):
            names = [n + text for n in names]
            if ranges:
                expanded = []
                for part in ranges.split(","):
                    lo, _, hi = part.partition("-")
                    width = len(lo)
                    expanded += [f"{i:0{width}d}" for i in range(int(lo), int(hi or lo) + 1)]
                names = [n + e for n in names for e in expanded]
        out += [n for n in names if n]
    return out


def _words(line: str) -> list[tuple[str, str]]:
    """A configuration line's Key=Value words (keys in lower case), its comment left out."""
    line = re.sub(r"(?<!\\)#.*", "", line).strip()
    try:
        words = shlex.split(line, posix=True)
    except ValueError as e:
        raise PrologError(f"cannot read the line {line!r}: {e}") from None
    return [(k.lower(), v) for k, _, v in (w.partition("=") for w in words)]


def _lines(path: Path, seen: frozenset[Path] = frozenset()) -> Iterator[list[tuple[str, str]]]:
    """The Key=Value lines of a Slurm configuration file, with its Include files in place."""
    try:
        text = path.read_text()
    except OSError as e:
        raise PrologError(f"cannot read {path}: {e.strerror or e}") from None
    for line in text.splitlines():
        words = _words(line)
        if words and words[0][0] == "include" and len(words) > 1:
            included = Path(words[1][0])
            included = included if included.is_absolute() else path.parent / included
            if included.resolve() not in seen:
                yield from _lines(included, seen | {path.resolve()})
        elif words:
            yield words


def split_gres(value: str) -> list[str]:
    """A Gres= value's items (commas inside parentheses, as in `(S:0,1)`, do not split)."""
    items, depth, cur = [], 0, ""
    for ch in value:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [i for i in [*items, cur] if i]


def gpu_types(slurm_conf: Path, node: str) -> list[str | None]:
    """The node's gpu GRES types in slurm.conf's order (None for an untyped `gpu:2`)."""
    gres: str | None = None
    default: str | None = None
    for words in _lines(slurm_conf):
        if words[0][0] != "nodename":
            continue
        found = dict(words)
        if words[0][1].lower() == "default":
            default = found.get("gres", default)
        elif node in hostlist(words[0][1]):
            gres = found.get("gres", default)
    if gres is None:
        raise PrologError(f"{slurm_conf} declares no Gres= for node {node}")
    types: list[str | None] = []
    for item in split_gres(gres):
        parts = re.sub(r"\(.*\)", "", item).split(":")
        if parts[0] != "gpu":
            continue
        kind = parts[1] if len(parts) > 2 or (len(parts) == 2 and not _COUNT.match(parts[1])) else None
        if kind not in types:
            types.append(kind)
    return types


@dataclass(frozen=True)
class Record:
    type: str | None
    files: tuple[str, ...]


def gres_records(gres_conf: Path, node: str) -> tuple[list[Record], bool]:
    """The node's gpu records of gres.conf in its order, and whether slurmd finds them with NVML."""
    records: list[Record] = []
    autodetect = ""
    for words in _lines(gres_conf):
        found = dict(words)
        if "nodename" in found and node not in hostlist(found["nodename"]):
            continue
        if "autodetect" in found and found.get("name", "gpu") == "gpu":
            autodetect = found["autodetect"].lower()
        if found.get("name") != "gpu":
            continue
        if "multiplefiles" in found:
            records.append(Record(found.get("type"), tuple(_expand_files(found["multiplefiles"]))))
        elif "file" in found:
            records += [Record(found.get("type"), (f,)) for f in _expand_files(found["file"])]
    return records, autodetect == "nvml"


def _expand_files(value: str) -> list[str]:
    return [f for part in split_gres(value) for f in hostlist(part)]


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").casefold() == (b or "").casefold()


def job_records(slurm_conf: Path, node: str, indices: list[int]) -> list[Record] | None:
    """The gres.conf records of the job's GPU numbers, or None where slurmd names them itself (NVML)."""
    records, nvml = gres_records(slurm_conf.parent / "gres.conf", node)
    if nvml:
        return None
    numbered = [r for kind in gpu_types(slurm_conf, node) for r in records if _same(r.type, kind)]
    wrong = [i for i in indices if not 0 <= i < len(numbered)]
    if wrong:
        raise PrologError(
            f"Slurm gave GPU number(s) {', '.join(map(str, wrong))}, but {slurm_conf.parent / 'gres.conf'} "
            f"has {len(numbered)} gpu record(s) for node {node}: the two files disagree with slurmd's"
        )
    return [numbered[i] for i in indices]


def device_uuids(records: list[Record]) -> list[str]:
    """The UUIDs (MIG-… or GPU-…) of the devices the records' files reach, read from the driver."""
    from ..backend import open_backend

    backend = open_backend()
    try:
        minors = backend.mig_minors() if any(len(r.files) > 1 for r in records) else {}
        gpus = {g.device_minor: g for g in backend.gpus()}
        out = []
        for r in records:
            gpu_minor, gi, ci = owner(minors, list(r.files))
            gpu = gpus.get(gpu_minor)
            if gpu is None:
                raise PrologError(f"no GPU has minor number {gpu_minor} ({r.files[0]})")
            if gi is None:
                out.append(gpu.uuid)
                continue
            match = [m.uuid for m in backend.mig_devices(gpu.index) if (m.gi_id, m.ci_id) == (gi, ci)]
            if not match:
                raise PrologError(
                    f"GPU {gpu.index} has no MIG device with GPU instance {gi} and compute instance {ci} "
                    f"({','.join(r.files)}): the layout changed since gres.conf was written; run "
                    "`migpool export --slurm` again"
                )
            out.append(match[0])
        return out
    finally:
        backend.close()


def prolog(env: Mapping[str, str]) -> list[str]:
    """The TaskProlog lines for a job with this environment."""
    given = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or ""
    if not given.strip():
        return []  # the job has no GPUs
    try:
        indices = [int(i) for i in given.split(",") if i.strip()]
    except ValueError:
        return _refuse(f"cannot read the job's GPU numbers {given!r}")
    slurm_conf = Path(env.get("SLURM_CONF") or DEFAULT_SLURM_CONF)
    node = env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    try:
        records = job_records(slurm_conf, node, indices)
        if records is None:
            return []
        uuids = device_uuids(records)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the job must not run on a guessed device
        return _refuse(str(e))
    return [f"export CUDA_VISIBLE_DEVICES={','.join(uuids)}"]


def _refuse(why: str) -> list[str]:
    return [f"print {PROLOG}: error: {why}; the job sees no GPU", "export CUDA_VISIBLE_DEVICES="]


def main() -> None:
    """The `migpool-slurm-prolog` command (slurm.conf's TaskProlog=)."""
    for line in prolog(os.environ):
        print(line)
