"""mkdocs hooks: pages whose tables and outputs come from the code itself, never pasted.

A page writes a marker on a line of its own, `<!-- generated: NAME -->`, and the build puts the table there:
`catalog` (from catalog.json), `metrics` (the exporter's families on a simulated H100 with MIG partitions),
`miso` (benchmarks/miso.py's figures, docs/generated/miso-*.json).

`<!-- output: COMMAND -->` lines (one or several in a row) become one text block: each command as `$ COMMAND`
and what it printed, run at build time from the checkout on simulated GPUs (`migpool` and `python` are this
interpreter's; leading `NAME=value` words set the environment). The commands of one block share one simulated
machine, fresh for that block. A command that exits non-zero fails the build unless its marker ends with
`(exits N)` naming that status.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
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
        "(a-) plain",
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


OUTPUTS = re.compile(r"^(?:<!-- output: .+ -->\n)+", re.M)
OUTPUT = re.compile(r"^<!-- output: (.+?)(?: \(exits (\d+)\))? -->$", re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def command_output(command: str, expected: int, state: Path) -> str:
    """What one documented command prints (stdout and stderr as they come), run as the page shows it."""
    words = shlex.split(command)
    env = {
        **os.environ,
        "MIGPOOL_STATE_DIR": str(state / "state"),
        "MIGPOOL_CONFIG_DIR": str(state / "config"),
        "MIGPOOL_CACHE_DIR": str(state / "cache"),
        "MIGPOOL_RUNTIME_DIR": str(state / "run"),
        "MIGPOOL_DATA_DIR": str(state / "lib"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "80",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    env.pop("MIGPOOL_SIMULATE", None)
    env.pop("MIGPOOL_READ_ONLY", None)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    program = {"migpool": [sys.executable, "-m", "migpool"], "python": [sys.executable]}
    argv = program.get(words[0], [words[0]]) + words[1:]
    r = subprocess.run(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    )
    if r.returncode != expected:
        raise RuntimeError(f"docs: `{command}` exited {r.returncode}, not {expected}:\n{r.stdout}")
    return ANSI.sub("", r.stdout).rstrip()


def outputs_block(markers: str) -> str:
    parts = []
    with tempfile.TemporaryDirectory(prefix="migpool-docs-") as state:
        for m in OUTPUT.finditer(markers):
            command, expected = m.group(1), int(m.group(2) or 0)
            parts.append(f"$ {command}\n{command_output(command, expected, Path(state))}")
    return "```text\n" + "\n".join(parts) + "\n```\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    markdown = MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)
    return OUTPUTS.sub(lambda m: outputs_block(m.group(0)), markdown)


# click 8.2+ gives an option without a default the value `Sentinel.UNSET`, which mkdocs-click prints as it is
UNSET_DEFAULT = re.compile(r"<code>Sentinel\.UNSET</code>")


# A code block at 1280 px with both sidebars shown is 80 columns wide (Material's 61rem grid less two 12.1rem
# sidebars and the margins, 656 px of Roboto Mono at 13.6 px); a longer line is cut off at its right edge.
BLOCK_COLUMNS = 80
CODE_BLOCK = re.compile(r"(<pre[^>]*><span></span><code>)(.*?)(</code></pre>)", re.S)
TRAILING_COMMENT = re.compile(
    r'^(?P<code>.*?\S.*?)(?:<span class="w">\s*</span>|[ \t])*(?P<comment><span class="c1">[^<]*</span>)$'
)
TAG = re.compile(r"<[^>]+>")


def comments_on_their_own_lines(code_html: str) -> str:
    """Each comment that ends a line of code moves to a line of its own above that line, with its indentation,
    so that a line of code and its explanation never run past the right edge of the block."""
    out = []
    for line in code_html.split("\n"):
        m = TRAILING_COMMENT.match(line)
        code = TAG.sub("", m.group("code")) if m else ""
        if not m or not code.strip():
            out.append(line)
            continue
        indent = code[: len(code) - len(code.lstrip())]
        out.append(indent + m.group("comment"))
        out.append(m.group("code"))
    return "\n".join(out)


NONE_DEFAULT = "<td>None</td>"


def on_page_content(html: str, page: Any, **_: Any) -> str:
    """The CLI reference's Default column: blank where an option has no default (click's unset value, or None);
    every code block's comments on lines of their own."""
    html = CODE_BLOCK.sub(lambda m: m.group(1) + comments_on_their_own_lines(m.group(2)) + m.group(3), html)
    if page.file.src_uri == "reference/cli.md":
        html = html.replace(NONE_DEFAULT, "<td></td>")
    return UNSET_DEFAULT.sub("", html)
