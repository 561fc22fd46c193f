"""migpool.reconcile.core: apply/teardown refuse leased or in-use partitions; regressions that once broke migpool."""

from __future__ import annotations

import pytest
from migpool_cli import run as _cli

import migpool
from migpool import Compute, Worker, plugins


def test_apply_and_teardown_refuse_a_leased_partition_even_with_force(monkeypatch, sim):
    """`migpool apply --force` stops processes on partitions it destroys, but never a partition that a pool
    leases; `teardown` likewise."""
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    b = sim()
    with Compute(
        worker=Worker(executor="process"), plugins=[plugins.mig(profile="3g.40gb", count="all")], progress=False
    ) as pool:
        assert len(set(pool.map(lambda _: __import__("os").environ["CUDA_VISIBLE_DEVICES"], range(4)))) == 2
        with pytest.raises(migpool.LeasedError, match="leased by PID"):
            migpool.apply({"1g.10gb": 7}, b, force=True)
        with pytest.raises(migpool.LeasedError):
            migpool.teardown(b, restore=True)
        assert sorted(d.profile_name for d in b.mig_devices(0)) == ["3g.40gb", "3g.40gb"]
        import json
        import os

        r = _cli("status", "--json", env=dict(os.environ))
        (gpu,) = json.loads(r.stdout)["gpus"]
        assert {h["pid"] for h in gpu["leases"].values()} == {os.getpid()} and len(gpu["leases"]) == 2
        assert f"held by PID {os.getpid()}" in _cli("status", env=dict(os.environ, COLUMNS="80")).stdout
    migpool.apply({"1g.10gb": 7}, b)  # free again once the pool has closed


def test_an_in_use_refusal_names_the_python_spelling_too(sim):
    import os

    b = sim()
    migpool.apply({"3g.40gb": 2}, b)
    b.register_process(0, os.getpid(), "python", b.mig_devices(0)[0].uuid, 100)
    with pytest.raises(migpool.InUseError, match=r"force=True in Python"):
        migpool.apply({"1g.10gb": 7}, b)
