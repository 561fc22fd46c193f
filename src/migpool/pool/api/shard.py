"""`migpool.shard`: this node's part of a data set, so that every node of a pool works on its own slice, with the
reference system's rules (the same items on the same node as there)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def shard_indices(n: int, node: int, total_nodes: int, shuffle: bool, seed: int | str, drop_last: bool) -> list[int]:
    """The positions of `n` items that belong to `node`: the contiguous block [n*node//total_nodes,
    n*(node+1)//total_nodes) of the order (the positions in turn, or after one seeded shuffle, the same on every
    node, with `shuffle`), as the reference's 0.11+ cuts; with `drop_last`, the order is first cut to a multiple
    of total_nodes, so that every node gets as many."""
    order = list(range(n))
    if shuffle:
        random.Random(seed).shuffle(order)
    if drop_last:
        order = order[: n - n % total_nodes]
    m = len(order)
    return order[m * node // total_nodes : m * (node + 1) // total_nodes]


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
    seed: int | None = None,
    drop_last: bool = False,
    node: int | None = None,
    total_nodes: int | None = None,
) -> Any:
    """This node's part of `data`: a tuple (and a list for any other sequence), a NumPy array or a torch tensor
    comes back as the same type. Several sequences at once (`x, y = shard(x, y)`) are cut with the same
    positions, so that they stay aligned; they come back as a tuple.

    Node `node` of `total_nodes` gets one contiguous block, the node-th of total_nodes nearly equal ones, in order
    (or in one seeded shuffled order, the same on every node, with `shuffle=True`; `seed=None` is the pool's id,
    so two pools shuffle differently); `drop_last=True` first drops the items past a multiple of total_nodes, so
    that every node gets as many. This is the reference's 0.11+ rule; its 0.10 dealt items out in turn
    (every total_nodes-th). `node` and `total_nodes` default to `instance_info()`'s rank and node count; give them
    to test or to shard by something else.
    """
    if not data:
        raise ValueError("shard() needs at least one sequence to cut: shard(items) or shard(x, y)")
    kinds = [_kind(d) for d in data]
    job_id = ""
    if node is None or total_nodes is None or (shuffle and seed is None):
        from .info import instance_info

        info = instance_info()
        node = info.node if node is None else node
        total_nodes = info.total_nodes if total_nodes is None else total_nodes
        job_id = info.job_id
    if total_nodes < 1 or not 0 <= node < total_nodes:
        raise ValueError(f"shard: node must be in 0..total_nodes-1, got node={node}, total_nodes={total_nodes}")
    order_seed: int | str = seed if seed is not None else job_id or 0
    parts = [
        _pick(d, k, shard_indices(len(d), node, total_nodes, shuffle, order_seed, drop_last))
        for d, k in zip(data, kinds, strict=True)
    ]
    return parts[0] if len(parts) == 1 else tuple(parts)
