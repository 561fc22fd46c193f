"""The trace docs/guides/advise.md runs at build time is what `benchmarks/miso_convert.py --records default`
writes from benchmarks/data/miso.json, so the guide's example shows MISO's default run, not a stale copy."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_guides_trace_is_miso_converts_default_run():
    argv = [sys.executable, "benchmarks/miso_convert.py", "--records", "default"]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    shipped = (ROOT / "benchmarks" / "data" / "miso-default.jsonl").read_text()
    assert r.stdout.count("\n") == 100
    assert shipped == r.stdout, (
        "stale: python benchmarks/miso_convert.py --records default > benchmarks/data/miso-default.jsonl"
    )
