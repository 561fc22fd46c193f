"""migpool.pool.dynamic.remembered: damaged run times are a cache; a regression that once broke migpool."""

from __future__ import annotations

from damaged_files import RANDOM_BYTES


def test_damaged_remembered_run_times_are_a_cache_said_once(tmp_path, caplog):
    from migpool.pool.dynamic import remembered

    path = tmp_path / "run-times.json"
    path.write_bytes(RANDOM_BYTES)
    assert remembered.load(path, "NVIDIA A100-SXM4-80GB") == {}
    assert remembered.load(path, "NVIDIA A100-SXM4-80GB") == {}
    assert len([r for r in caplog.records if "learned run times" in r.getMessage()]) == 1
