"""`migpool.shard`: this node's part of a data set, so that every node of a pool works on its own slice."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def shard(
    data: Sequence[Any] | Any,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    node: int | None = None,
    total_nodes: int | None = None,
) -> Any:
    """This node's part of `data` (a list, tuple or NumPy array; the same type comes back).

    The items are split into `total_nodes` contiguous parts whose sizes differ by at most one, in order (or in
    one seeded shuffled order, the same on every node, with `shuffle=True`); `drop_last=True` first drops the
    last `len % total_nodes` items so that every node gets as many. `node`/`total_nodes` default to
    `instance_info()`'s; give them to test or to shard by something else.
    """
    if node is None or total_nodes is None:
        from .info import instance_info

        info = instance_info()
        node = info.node if node is None else node
        total_nodes = info.total_nodes if total_nodes is None else total_nodes
    if total_nodes < 1 or not 0 <= node < total_nodes:
        raise ValueError(f"shard: node must be in 0..total_nodes-1, got node={node}, total_nodes={total_nodes}")
    is_array = type(data).__module__ == "numpy" and hasattr(data, "shape")
    if not (is_array or isinstance(data, Sequence)) or isinstance(data, (str, bytes)):
        raise TypeError(f"shard takes a list, tuple or NumPy array, not {type(data).__name__}")
    order = list(range(len(data)))
    if shuffle:
        random.Random(seed).shuffle(order)
    if drop_last:
        order = order[: len(order) - len(order) % total_nodes]
    base, extra = divmod(len(order), total_nodes)
    start = node * base + min(node, extra)
    mine = order[start : start + base + (1 if node < extra else 0)]
    if is_array:
        return data[mine]  # type: ignore[call-overload]  # a NumPy array takes a list of indices
    picked = [data[i] for i in mine]
    return tuple(picked) if isinstance(data, tuple) else picked
