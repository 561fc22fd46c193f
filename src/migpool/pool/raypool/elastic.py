"""Elastic nodes on a Ray pool: the effect that adds and reclaims the pool's Ray nodes.

Ray's nodes are Ray's: the pool chose and prepared up to `max` of them when it opened (the plugin chain on each,
as for any Ray pool) and keeps them prepared until it closes. What scales is the pool's use of them: reclaiming a
node ends its actors (one per partition or worker; the node's partitions, if any, stay the pool's), adding it
starts them again, pinned to that node as before. When and how many is scheduler/elastic.py's `decide`, the rule a
local pool follows too; only nodes still alive in the Ray cluster are added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..api.nodes import Nodes, Options
from ..api.providers import WorkerSpec
from ..scheduler.core import Scheduler
from ..scheduler.elastic import Elastic, NodeEffect, by_node, elastic_nodes
from ..scheduler.slot import Slot

if TYPE_CHECKING:
    from .pool import RayPool


class RayNodes(NodeEffect):
    """A Ray pool's nodes as an elastic pool adds and reclaims them: a node's actors are started (the scheduler
    makes a `RaySlot` of each spec) and ended (`ray.kill`, through the slot)."""

    def __init__(self, pool: RayPool, sched: Scheduler, specs: dict[int, list[WorkerSpec]]) -> None:
        super().__init__(sched, specs, _no_hook)
        self.pool = pool

    def free(self, running: set[int]) -> list[int]:
        """The nodes not running now whose Ray node is still in the cluster, in the pool's node order."""
        return [k for k in super().free(running) if self.pool.node_alive(self.pool.nodes[k].node_id)]


def _no_hook(slot: Slot) -> None:
    """(A Ray pool's plugins run on the node, inside each actor; there is no hook to call here.)"""


def start_ray_elastic(
    pool: RayPool, sched: Scheduler, specs: Sequence[WorkerSpec], bounds: Nodes, options: Options
) -> Elastic:
    """Keep the Ray pool's nodes between `bounds` as its load changes; `specs`: the workers of every node it chose
    (those of the first `bounds.start` nodes are the scheduler's already)."""
    return elastic_nodes(sched, RayNodes(pool, sched, by_node(specs)), specs, bounds, options)
