"""Pools that race each other, each in its own process (spawned), for tests/host/test_leases.py."""

from __future__ import annotations


def race(profile: str, rounds: int, barrier, results, exclusive: bool = True) -> None:
    """Each round: wait for the other racer, open a pool on `profile` (the whole GPU's, unless not `exclusive`;
    or be refused), report the partitions its tasks ran on and whether they exist while the pool is open, wait
    again (both pools open at once, if both could open), close."""
    import migpool
    from migpool import Compute, Worker, plugins

    backend = migpool.open_backend()
    for k in range(rounds):
        barrier.wait()
        try:
            with Compute(
                worker=Worker(executor="process"),
                plugins=[plugins.mig(profile=profile, exclusive=exclusive)],
                progress=False,
            ) as pool:
                ran = set(pool.map(lambda _: __import__("os").environ.get("CUDA_VISIBLE_DEVICES", ""), range(6)))
                exist = {d.uuid for d in backend.mig_devices(0)}
                barrier.wait()
                results.put((k, profile, "open", sorted(ran), sorted(ran - exist), ""))
        except migpool.LeasedError as e:
            barrier.wait()
            results.put((k, profile, "refused", [], [], str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
            barrier.wait()
            results.put((k, profile, "error", [], [], f"{type(e).__name__}: {e}"))
        barrier.wait()  # both closed before the next round
