"""Fragmentation refusals of dynamic MIG's policy, counted: a task that waits although its size would fit on a
GPU once that GPU's idle partitions are destroyed (none in use is ever touched). The policy's step destroys idle
partitions to make room (policy.fits), so this count stays zero; `compute.stats()` reports it as
`placement_blocked`, and the property test (tests/pool/test_policy_property.py) checks it from outside."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...mig.catalog import Profile
from .placement import profile_of

if TYPE_CHECKING:
    from .policy import DynamicPolicy


def repack_would_hold(policy: DynamicPolicy, job: Any, p: Profile) -> bool:
    """Whether a `p` partition for `job` would fit on some GPU that may take it (not reserved for another task,
    on a node with no create under way) once that GPU's idle partitions are destroyed: those taking no task for
    a drain aside, and those kept for an earlier waiting task (promised)."""
    held = policy.held
    changing = {m.gpu[0] for m in held.making}
    for gpu in held.gpus:
        q = profile_of(held.models[gpu], p.name)
        if q is None or gpu[0] in changing or not policy.reservations.allows(gpu, job, p.name):
            continue
        free = {
            id(s.instance)
            for s in held.slots
            if s.gpu == gpu
            and not s.worker.outstanding
            and not s.worker.draining
            and id(s.worker) not in policy.promised
        }
        rest = [i for i in held.instances(gpu) if id(i) not in free]
        if policy.placement.best(gpu, q, rest) is not None:
            return True
    return False


def wanted(policy: DynamicPolicy, job: Any, behind: int) -> Profile | None:
    """The size the policy would make first for `job` now: its profile, else the size ranked first by the load."""
    choice = policy.costs.loaded(job, policy.costs.choice(job), behind)
    return choice.ranked[0] if choice.ranked else None
