"""migpool.mig.planner: huge counts are refused at once; a regression that once broke migpool (issue 22)."""

from __future__ import annotations

import pytest
from migpool_cli import run as _cli


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "1g.10gb", "-n", "100000000"],
        ["plan", "1g.10gb:1000000000000000000"],
        ["apply", "--dry-run", "3g.40gb:10000000000"],
    ],
)
def test_huge_counts_are_refused_at_once_with_what_fits(monkeypatch, args):
    """Before: the count was expanded into a list first (10**8: no answer in 60 s, 4.2 GB; 10**18: MemoryError)."""
    import os
    import time

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    t0 = time.monotonic()
    r = _cli(*args, env=dict(os.environ))
    assert r.returncode == 2 and "cannot fit" in r.stderr and "at most" in r.stderr and "on an empty GPU" in r.stderr
    assert time.monotonic() - t0 < 20
