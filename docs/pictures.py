"""The site's pictures, drawn as SVG from real output: the planner's placements of a layout, dynamic MIG's mean
JCT on MISO's traces against the static layouts (docs/generated/miso-*.json, written by benchmarks/miso.py --json),
and payload throughput against the peers (docs/payload-benchmark.txt, benchmarks/payload.py's output).

    python docs/pictures.py           # write docs/pictures/*.svg
    python docs/pictures.py --check   # exit 1 if a checked-in picture differs from what its source draws now
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "pictures"
COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]
FONT = 'font-family="sans-serif" font-size="12"'


def _svg(width: int, height: int, body: list[str]) -> str:
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    return "\n".join([head, f'<rect width="{width}" height="{height}" fill="white"/>', *body, "</svg>"]) + "\n"


def placements(model: str = "A100-80GB", layout: str = "3g.40gb:1,2g.20gb:1,1g.10gb:2") -> str:
    """The memory slices of one GPU, each planned instance a bar over the slices it takes (as `migpool plan`)."""
    from migpool import plan
    from migpool.mig import catalog
    from migpool.mig.layout import Layout

    gpu = catalog.lookup(model)
    insts = plan(gpu, Layout.of(layout))
    cell, left, top = 92, 20, 40
    body = [f'<text x="{left}" y="20" {FONT}>{escape(gpu.nvml_names[0])}: {escape(layout)}</text>']
    for k in range(gpu.memory_slices):
        x = left + k * cell
        body.append(f'<rect x="{x}" y="{top}" width="{cell}" height="24" fill="#eee" stroke="#999"/>')
        body.append(f'<text x="{x + cell / 2}" y="{top + 16}" text-anchor="middle" {FONT}>slice {k}</text>')
    for n, inst in enumerate(sorted(insts, key=lambda i: i.start)):
        x, w = left + inst.start * cell, inst.size * cell
        body.append(f'<rect x="{x + 2}" y="{top + 32}" width="{w - 4}" height="30" fill="{COLORS[n % 8]}" rx="4"/>')
        label = f"{inst.profile.name} @ {inst.start}:{inst.size}"
        body.append(f'<text x="{x + w / 2}" y="{top + 52}" text-anchor="middle" fill="white" {FONT}>{label}</text>')
    return _svg(left * 2 + gpu.memory_slices * cell, top + 80, body)


def bars(title: str, groups: list[tuple[str, list[tuple[str, float]]]], unit: str, log: bool = False) -> str:
    """Horizontal bars, one group per case: each (label, value)."""
    import math

    left, width, row, top = 190, 420, 16, 30
    peak = max(v for _, rows in groups for _, v in rows)
    low = min(v for _, rows in groups for _, v in rows)

    def scale(v: float) -> float:
        if log:
            return width * (math.log10(v) - math.log10(low) + 0.3) / (math.log10(peak) - math.log10(low) + 0.3)
        return width * v / peak

    body = [f'<text x="10" y="18" {FONT} font-weight="bold">{escape(title)}</text>']
    y = top
    for name, rows in groups:
        body.append(f'<text x="10" y="{y + 12}" {FONT} font-weight="bold">{escape(name)}</text>')
        y += row + 2
        for k, (label, v) in enumerate(rows):
            body.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" {FONT}>{escape(label)}</text>')
            body.append(
                f'<rect x="{left}" y="{y + 2}" width="{scale(v):.1f}" height="{row - 4}" fill="{COLORS[k % 8]}"/>'
            )
            body.append(f'<text x="{left + scale(v) + 4:.1f}" y="{y + 12}" {FONT}>{v:,.2f} {escape(unit)}</text>')
            y += row
        y += 8
    return _svg(left + width + 110, y + 10, body)


def miso() -> str:
    runs = [
        r for f in sorted((ROOT / "docs" / "generated").glob("miso-*.json")) for r in json.loads(f.read_text())["runs"]
    ]
    groups = [(f"{r['trace']} trace, {r['gpus']} GPU(s)", [(k, v["mean"]) for k, v in r["rows"].items()]) for r in runs]
    return bars("Mean job completion time on MISO's traces (lower is better)", groups, "s")


def payload() -> str:
    text = (ROOT / "docs" / "payload-benchmark.txt").read_text().split("\n==")[1]  # the first machine's table
    groups: list[tuple[str, list[tuple[str, float]]]] = []
    for line in text.splitlines():
        case = re.match(r"^(\d+ MiB \w+(?:, \d+ tasks)?)\s", line)
        if case:
            groups.append((case.group(1), []))
        m = re.match(r"^.{24}(migpool|ProcessPoolExecutor|loky|Ray)\s+[\d.]+\s+([\d.]+)", line)
        if m and groups:
            groups[-1][1].append((m.group(1), float(m.group(2))))
    return bars("Payload throughput against the peers (higher is better; log scale)", groups, "GB/s", log=True)


PICTURES = {"placements.svg": placements, "miso-jct.svg": miso, "payload.svg": payload}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, draw in PICTURES.items():
        svg, path = draw(), OUT / name
        if args.check:
            if not path.exists() or path.read_text() != svg:
                stale.append(name)
        else:
            path.write_text(svg)
    if stale:
        print(f"error: stale pictures {', '.join(stale)}: run python docs/pictures.py and commit them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
