"""mkdocs hooks: pages whose tables come from the code itself, never pasted. A page writes a marker on a line of
its own, `<!-- generated: NAME -->`, and the build puts the table there: `catalog` (from catalog.json),
`metrics` (the exporter's families on a simulated H100 with MIG partitions), `miso` (benchmarks/miso.py's
figures, docs/generated/miso-*.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.M)


def catalog_table() -> str:
    data = json.loads((ROOT / "src" / "migpool" / "mig" / "data" / "catalog.json").read_text())
    out = []
    for m in data["models"]:
        est = " (estimates)" if m.get("source") == "estimate" or m.get("estimated") else ""
        out.append(f"### {m['key']}\n")
        out.append(
            f"{', '.join(m['nvml_names'])}: {m['memory_mib']} MiB, {m['sms']} SMs, {m['compute_slices']} compute "
            f"and {m['memory_slices']} memory slices; source: {m['source']}{est}.\n"
        )
        out.append("| profile | id | slices | memory (MiB) | SMs | max | placements |")
        out.append("|---|---|---|---|---|---|---|")
        for p in m["profiles"]:
            out.append(
                f"| `{p['name']}` | {p['id']} | {p['slices']} | {p['memory_mib']} | {p['sms']} | "
                f"{p['max_instances']} | `{p['placements']}` |"
            )
        out.append("")
    return "\n".join(out)


def metrics_table() -> str:
    from migpool.backend.simulated import SimulatedBackend
    from migpool.observe.exporter import families
    from migpool.observe.telemetry import Sampler
    from migpool.reconcile import core as reconcile

    sim = SimulatedBackend("H100-80GB")
    reconcile.apply({"3g.40gb": 1, "1g.10gb": 3}, sim)
    with Sampler(sim, interval=0.05) as s:
        snap = s.latest()
    rows = ["| metric | type | what it is |", "|---|---|---|"]
    for fam in families(snap, process_metrics=True):
        doc = fam.documentation.replace("|", "\\|")
        rows.append(f"| `{fam.name}` | {fam.type} | {doc} |")
    return "\n".join(rows)


def miso_table() -> str:
    """Mean JCT per strategy on MISO's traces, from benchmarks/miso.py --json (docs/generated/miso-*.json)."""
    runs = [
        r for f in sorted((ROOT / "docs" / "generated").glob("miso-*.json")) for r in json.loads(f.read_text())["runs"]
    ]
    names = [
        "(a) dynamic",
        "(a') learned",
        "(a-) no moves",
        "(b) best static",
        "(c) whole GPUs",
        "(d) MISO static",
        "(f) joint replan",
    ]
    head = ["trace", "GPUs", *(n.split(" ", 1)[1] for n in names), "(a) vs (b)", "(a) vs (c)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        m = {k: v["mean"] for k, v in r["rows"].items()}
        a = m["(a) dynamic"]
        cells = [r["trace"], str(r["gpus"]), *(f"{m[n]:,.0f} s" for n in names)]
        cells += [f"{a / m['(b) best static'] - 1:+.0%}", f"{a / m['(c) whole GPUs'] - 1:+.0%}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


GENERATORS = {"catalog": catalog_table, "metrics": metrics_table, "miso": miso_table}


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


# click 8.2+ gives an option without a default the value `Sentinel.UNSET`, which mkdocs-click prints as it is
UNSET_DEFAULT = re.compile(r"<code>Sentinel\.UNSET</code>")


def on_page_content(html: str, **_: Any) -> str:
    """The CLI reference's Default column: blank where an option has no default."""
    return UNSET_DEFAULT.sub("", html)
