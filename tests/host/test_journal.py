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


def test_a_record_is_made_from_its_planned_instance_and_read_back_from_json():
    """One conversion each way: a planned GPU instance to the journal's record, the record to JSON and back
    (the JSON as the journal has always written it), and one key telling GPU instances apart."""
    from migpool.host.journal import InstanceRecord
    from migpool.mig import catalog
    from migpool.mig.planner import plan

    first, second = plan(catalog.lookup("A100-80GB"), {"3g.40gb": 2})
    whole, split = InstanceRecord.of(first), InstanceRecord.of(first, (2, 1))
    assert whole.as_json() == {"profile": "3g.40gb", "start": first.start, "size": 4}
    assert split.as_json() == {"profile": "3g.40gb", "start": first.start, "size": 4, "cis": [2, 1]}
    assert [InstanceRecord.from_json(r.as_json()) for r in (whole, split)] == [whole, split]
    assert whole.same_instance(split) and whole.same_instance(first) and whole.key == first.key
    assert not whole.same_instance(second) and not whole.same_instance(InstanceRecord.of(second))
