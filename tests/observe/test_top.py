"""migpool.observe.top: `migpool top` into a pipe; a regression that once broke migpool (issue 22)."""

from __future__ import annotations


def test_top_into_a_pipe_prints_plain_snapshots(monkeypatch):
    """Before: `migpool top | head -1` and `migpool top > file` wrote nothing (rich Live on a non-terminal)."""
    import os
    import subprocess
    import sys

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    p = subprocess.Popen(
        [sys.executable, "-m", "migpool", "top", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        first = [p.stdout.readline() for _ in range(2)]
    finally:
        p.kill()
        p.wait()
    assert first[0].startswith("migpool top:") and "GPU 0: NVIDIA A100" in first[1]
    assert "\x1b" not in "".join(first)  # no terminal control sequences
