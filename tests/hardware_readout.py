"""Parse the read-only readout of a real GPU (shared/hardware/*.md) into comparable rows."""

from __future__ import annotations

import re
from pathlib import Path


def parse(path: Path) -> dict:
    text = path.read_text()
    lgip = {}
    for m in re.finditer(r"^\| MIG (\S+) \| (\d+) \| (\d+) \| ([\d.]+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M):
        name, pid, inst, mem, sm, dec, enc, ce, jpeg, ofa = m.groups()
        lgip[name] = dict(id=int(pid), max_instances=int(inst), memory_gib=float(mem), sms=int(sm), decoders=int(dec),
                          encoders=int(enc), copy_engines=int(ce), jpeg=int(jpeg), ofa=int(ofa))
    lgipp = {}
    for m in re.finditer(r"^GPU\s+0 Profile ID\s+(\d+) Placements?\s*: (\{[\d,]+\}:\d+)$", text, re.M):
        lgipp[int(m.group(1))] = m.group(2)
    nvml = {}
    for m in re.finditer(r"^(\d+) -> id(\d+) (\S+) (\d+)MB, slice(?:Count)? (\d+), inst(?:anceCount)? (\d+), SM (\d+)", text, re.M):
        idx, pid, name, mem, sl, inst, sm = m.groups()
        nvml[name] = dict(nvml_index=int(idx), id=int(pid), memory_mib=int(mem), slices=int(sl), max_instances=int(inst), sms=int(sm))
    name = re.search(r"readout of a real (.+?) \(", text).group(1)
    return dict(name=name, lgip=lgip, lgipp=lgipp, nvml=nvml)
