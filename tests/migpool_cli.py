"""Run the `migpool` command line in a fresh Python, as a user would, for the tests in every folder."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m migpool ARGS` with exactly `env` (None: this process's environment); never raises on failure."""
    return subprocess.run([sys.executable, "-m", "migpool", *args], capture_output=True, text=True, env=env)


def mp(*args: str, env: dict[str, str] | None = None, check: int | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m migpool ARGS` 200 columns wide, with `env` added to this process's environment; `check`: the exit
    code it must give."""
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    r = subprocess.run([sys.executable, "-m", "migpool", *args], capture_output=True, text=True, env=e)
    if check is not None:
        assert r.returncode == check, (r.stdout, r.stderr)
    return r


def one_error_line(r: subprocess.CompletedProcess[str], path: object) -> None:
    """The command was refused as a usage error (exit 2) with one `error:` line that names `path`, no traceback."""
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], r.stderr
    assert "Traceback" not in r.stderr
