"""migpool.host.journal: a damaged journal is refused; a regression that once broke migpool (issue 22)."""

from __future__ import annotations

import pytest
from damaged_files import DAMAGE
from migpool_cli import one_error_line as _one_error_line
from migpool_cli import run as _cli

import migpool


@pytest.mark.parametrize("damage", [*DAMAGE, "wrong types"])
def test_a_damaged_journal_is_refused_before_anything_changes(monkeypatch, sim, damage):
    """Before: `teardown --restore` said "Nothing migpool created is left." and exited 0 (the prior state lost);
    wrong types made `apply` destroy a partition, then crash with no rollback."""
    import os

    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    b = sim()
    migpool.apply({"3g.40gb": 2}, b)
    journal = b.state_dirs().journal()
    bad = b'{"%s": {"prior": {"mig_enabled": "yes", "instances": 3}, "created": []}}' % b.gpus()[0].uuid.encode()
    journal.write_bytes(bad if damage == "wrong types" else DAMAGE[damage])
    before = [d.uuid for d in b.mig_devices(0)]
    for args in (["teardown", "--restore"], ["apply", "1g.10gb:7"], ["teardown"]):
        _one_error_line(_cli(*args, env=dict(os.environ)), journal)
        assert [d.uuid for d in b.mig_devices(0)] == before
