"""Parse the read-only readouts of real GPUs (shared/hardware/*.md) into comparable rows.

Two layouts exist: the H100 one (an `nvidia-smi mig -lgip` table, the `-lgipp` lines verbatim and NVML's
per-index profile info) and the H200 one (one table with the GiB and NVML MiB columns and placements).
"""

from __future__ import annotations

import re
from pathlib import Path

_LGIP = re.compile(
    r"^\| MIG (\S+) \| (\d+) \| (\d+) \| ([\d.]+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", re.M
)
_LGIPP = re.compile(r"^GPU\s+0 Profile ID\s+(\d+) Placements?\s*: (\{[\d,]+\}:\d+)$", re.M)
_NVML = re.compile(r"^(\d+) -> id(\d+) (\S+) (\d+)MB, slice(?:Count)? (\d+), inst(?:anceCount)? (\d+), SM (\d+)", re.M)
# | profile | id | instances | GiB | MiB | SMs | CE | DEC | JPEG | OFA | ENC | placements |
_COMBINED = re.compile(
    r"^\| (\d+g\.\d+gb(?:\+me)?)\s*\|\s*(\d+) \| (\d+) \| ([\d.]+)\s*\| (\d+)\s*\| (\d+)\s*\| "
    r"(\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\{[\d,]+\}:\d+) \|$",
    re.M,
)


def parse(path: Path) -> dict:
    """{name, lgip: {profile: row}, lgipp: {profile id: placements}, nvml: {profile: row}}."""
    text = path.read_text()
    lgip, lgipp, nvml = {}, {}, {}
    for m in _LGIP.finditer(text):
        name, pid, inst, mem, sm, dec, enc, ce, jpeg, ofa = m.groups()
        lgip[name] = dict(
            id=int(pid),
            max_instances=int(inst),
            memory_gib=float(mem),
            sms=int(sm),
            decoders=int(dec),
            encoders=int(enc),
            copy_engines=int(ce),
            jpeg=int(jpeg),
            ofa=int(ofa),
        )
    for m in _LGIPP.finditer(text):
        lgipp[int(m.group(1))] = m.group(2)
    for m in _NVML.finditer(text):
        idx, pid, name, mem, sl, inst, sm = m.groups()
        nvml[name] = dict(
            nvml_index=int(idx), id=int(pid), memory_mib=int(mem), slices=int(sl), max_instances=int(inst), sms=int(sm)
        )
    for m in _COMBINED.finditer(text):
        name, pid, inst, gib, mib, sm, ce, dec, jpeg, ofa, enc, place = m.groups()
        lgip[name] = dict(
            id=int(pid),
            max_instances=int(inst),
            memory_gib=float(gib),
            sms=int(sm),
            decoders=int(dec),
            encoders=int(enc),
            copy_engines=int(ce),
            jpeg=int(jpeg),
            ofa=int(ofa),
        )
        lgipp[int(pid)] = place
        nvml[name] = dict(id=int(pid), memory_mib=int(mib), max_instances=int(inst), sms=int(sm))
    found = re.search(r"readout of a real (.+?) \(", text) or re.search(r"^# NVIDIA (.+?)(?: \(|:)", text, re.M)
    nvml_name = re.search(r"NVML name `([^`]+)`", text)
    return dict(
        name=found.group(1) if found else None,
        nvml_name=nvml_name.group(1) if nvml_name else None,
        lgip=lgip,
        lgipp=lgipp,
        nvml=nvml,
    )
