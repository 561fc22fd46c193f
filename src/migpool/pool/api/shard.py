"""`migpool.shard`: this node's part of a data set, so that every node of a pool works on its own slice, with the
reference system's rules (the same items on the same node as there)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def shard_indices(n: int, node: int, total_nodes: int, shuffle: bool, seed: int, drop_last: bool) -> list[int]:
    """The positions of `n` items that belong to `node`: every total_nodes-th from position `node` (after one
    seeded shuffle, the same on every node, with `shuffle`); with `drop_last`, a contiguous block of
    n // total_nodes positions instead, so that every node gets as many."""
    order = list(range(n))
    if shuffle:
        random.Random(seed).shuffle(order)
    if drop_last:
        per = n // total_nodes
        return order[node * per : (node + 1) * per]
    return order[node::total_nodes]


def _kind(data: Any) -> str:
    cls = type(data)
    name = f"{cls.__module__}.{cls.__name__}"
    if name in ("numpy.ndarray", "torch.Tensor"):
        return name
    if isinstance(data, Sequence):
        return "tuple" if isinstance(data, tuple) else "sequence"
    raise TypeError(
        f"shard takes lists, tuples, other sequences, NumPy arrays and torch tensors, not {cls.__name__} "
        "(make it a list first: list(items))"
    )


def _pick(data: Any, kind: str, mine: list[int]) -> Any:
    if kind == "numpy.ndarray":
        return data[mine]
    if kind == "torch.Tensor":
        import torch

        return data[torch.tensor(mine, dtype=torch.long)]
    picked = [data[i] for i in mine]
    return tuple(picked) if kind == "tuple" else picked


def shard(
    *data: Any,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    node: int | None = None,
    total_nodes: int | None = None,
) -> Any:
    """This node's part of `data`: a tuple (and a list for any other sequence), a NumPy array or a torch tensor
    comes back as the same type. Several sequences at once (`x, y = shard(x, y)`) are cut with the same
    positions, so that they stay aligned; they come back as a tuple.

    Node `node` of `total_nodes` gets every total_nodes-th item, starting from its own index, in order (or in
    one seeded shuffled order, the same on every node, with `shuffle=True`); `drop_last=True` gives each node a
    contiguous block of len // total_nodes items instead, so that every node gets as many. `node` and
    `total_nodes` default to `instance_info()`'s; give them to test or to shard by something else.
    """
    if not data:
        raise ValueError("shard() needs at least one sequence to cut: shard(items) or shard(x, y)")
    kinds = [_kind(d) for d in data]
    if node is None or total_nodes is None:
        from .info import instance_info

        info = instance_info()
        node = info.node if node is None else node
        total_nodes = info.total_nodes if total_nodes is None else total_nodes
    if total_nodes < 1 or not 0 <= node < total_nodes:
        raise ValueError(f"shard: node must be in 0..total_nodes-1, got node={node}, total_nodes={total_nodes}")
    parts = [
        _pick(d, k, shard_indices(len(d), node, total_nodes, shuffle, seed, drop_last))
        for d, k in zip(data, kinds, strict=True)
    ]
    return parts[0] if len(parts) == 1 else tuple(parts)
