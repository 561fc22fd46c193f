"""The virtual pool's model of a worker's start (migpool.advise.virtual: what benchmarks/miso.py replays)."""

from __future__ import annotations

from migpool.advise.virtual import VirtualPool
from migpool.mig import catalog


def pool(**kw) -> VirtualPool:
    return VirtualPool([((0, 0), catalog.lookup("A100-40GB"))], **kw)


def test_a_parked_spare_starts_a_worker_quickly_and_is_replaced_a_fresh_start_later():
    sim = pool(start_s=0.4, fresh_s=3.8, spares=1)
    assert sim.start_seconds() == 0.4  # the spare parked when the pool opened
    assert sim.start_seconds() == 3.8  # its replacement is still importing: a fresh process
    sim.now = 3.7
    assert sim.start_seconds() == 3.8
    sim.now = 3.8  # the replacement parked
    assert sim.start_seconds() == 0.4
    assert sim.start_seconds() == 3.8


def test_without_spares_modelled_every_worker_takes_start_s():
    sim = pool(start_s=1.0)
    assert [sim.start_seconds() for _ in range(3)] == [1.0, 1.0, 1.0]
    two = pool(start_s=0.5, fresh_s=4.0, spares=2)
    assert [two.start_seconds() for _ in range(3)] == [0.5, 0.5, 4.0]
