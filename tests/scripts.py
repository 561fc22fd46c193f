"""Run a pool script in a separate Python process, as a user would (pool_tasks importable there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start(code: str, marker: str) -> subprocess.Popen:
    """Start `code` in a new Python and wait until it prints the line `marker` (the caller kills it)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if line != marker:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the script printed {line!r}, not {marker!r}")
    return proc
