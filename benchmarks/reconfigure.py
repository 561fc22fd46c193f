"""Reconfiguration benchmark: migpool's minimal transitions beside 'destroy everything, recreate'
(what mig-parted does when a GPU's config differs), on simulated A100-80GB and H100-80GB.

For each transition: driver operations performed and existing partitions disturbed (destroyed), for both
strategies, measured on the simulator in the same run, with the ratio migpool / recreate (lower is better).

    python benchmarks/reconfigure.py
"""

from __future__ import annotations

import os
import tempfile

import migpool
from migpool.reconcile.core import actual_instances

TRANSITIONS = [
    ({"1g.10gb": 7}, {"3g.40gb": 1, "1g.10gb": 4}),
    ({"3g.40gb": 2}, {"3g.40gb": 1, "1g.10gb": 3}),
    ({"4g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1}, {"4g.40gb": 1, "1g.10gb": 3}),
    ({"2g.20gb": 3, "1g.10gb": 1}, {"3g.40gb": 1, "2g.20gb": 2}),
]
TRANSITIONS += [(b, a) for a, b in TRANSITIONS]


def fmt(layout: dict[str, int]) -> str:
    return "+".join(f"{n}×{p}" for p, n in layout.items())


def recreate(backend: migpool.SimulatedBackend, goal: dict[str, int]) -> tuple[int, int]:
    """The baseline strategy, executed: destroy every CI and GI, then create the goal from scratch."""
    before = backend.operations()
    existing = actual_instances(backend, 0)
    for a in existing:
        for ci in a.ci_ids:
            backend.destroy_compute_instance(0, a.gi_id, ci)
        backend.destroy_gpu_instance(0, a.gi_id)
    for inst in migpool.plan(backend.model(0), goal):
        gi = backend.create_gpu_instance(0, inst.profile.id, inst.placement)
        backend.create_compute_instance(0, gi.id)
    assert migpool.diff(goal, backend) == []
    return backend.operations() - before, len(existing)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for gpu in ("A100-80GB", "H100-80GB"):
            for i, (start, goal) in enumerate(TRANSITIONS):
                os.environ["MIGPOOL_STATE_DIR"] = f"{d}/{gpu}-{i}-mp"
                b = migpool.SimulatedBackend(gpu)
                migpool.apply(start, b)
                before_uuids = {m.uuid for m in b.mig_devices(0)}
                res = migpool.apply(goal, b)
                assert migpool.diff(goal, b) == []
                mp_ops = len(res.operations)
                mp_disturbed = len(before_uuids - {m.uuid for m in b.mig_devices(0)})
                os.environ["MIGPOOL_STATE_DIR"] = f"{d}/{gpu}-{i}-rc"
                r = migpool.SimulatedBackend(gpu)
                migpool.apply(start, r)
                rc_ops, rc_disturbed = recreate(r, goal)
                rows.append((gpu, f"{fmt(start)} → {fmt(goal)}", mp_ops, rc_ops, mp_disturbed, rc_disturbed))
    w = max(len(r[1]) for r in rows)
    print(f"{'GPU':<10} {'transition':<{w}}  {'ops migpool/recreate':>21}  {'disturbed migpool/recreate':>27}")
    for gpu, name, mo, ro, md, rd in rows:
        print(f"{gpu:<10} {name:<{w}}  {mo:>9} / {ro:<9}  {md:>13} / {rd:<11}")
    tm, tr = sum(r[2] for r in rows), sum(r[3] for r in rows)
    dm, dr = sum(r[4] for r in rows), sum(r[5] for r in rows)
    print(
        f"total: operations {tm} vs {tr} (ratio {tm / tr:.2f}); "
        f"partitions disturbed {dm} vs {dr} (ratio {dm / dr:.2f}); "
        "lower is better"
    )


if __name__ == "__main__":
    main()
