"""How a Ray pool's values travel: small ones pickled inside the batched messages, large ones (and stored values)
through Ray's object store."""

from __future__ import annotations

import pickle
from typing import Any

from ..wire.pickling import dumps, dumps_out_of_band

RAY_INLINE_MAX = 1 << 20  # a value this big or bigger travels through Ray's object store, not in the batch


class InStore:
    """A value that travels through Ray's object store (a large argument, result or stream item, or a value
    stored with `put`): Ray moves it once, and maps NumPy arrays without a copy where it can."""

    __slots__ = ("ref", "nbytes")

    def __init__(self, ref: Any, nbytes: int) -> None:
        self.ref, self.nbytes = ref, nbytes

    def __reduce__(self) -> tuple[Any, ...]:
        return InStore, (self.ref, self.nbytes)


def _size(obj: Any) -> int:
    """How many bytes `obj` pickles to, counting its buffers without copying them."""
    body, buffers = dumps_out_of_band(obj)
    return len(body) + sum(b.raw().nbytes for b in buffers)


class RayCodec:
    """How a Ray pool's values travel: small ones pickled inside the batched messages, large ones (and stored
    values) through Ray's object store, so that a large result never holds up the other answers of its actor.
    An actor's large result belongs to the actor until the driver has it: the slot stops its actor only once
    every such result has arrived (RaySlot.kill)."""

    def pack(self, obj: Any) -> Any:
        body, buffers = dumps_out_of_band(obj)  # pickled once: a value without buffers is sent as it is
        size = len(body) + sum(b.raw().nbytes for b in buffers)
        if size < RAY_INLINE_MAX:
            return dumps(obj) if buffers else body
        import ray

        return InStore(ray.put(obj), size)

    def store(self, obj: Any) -> Any:
        import ray

        return InStore(ray.put(obj), _size(obj))

    def unpack(self, data: Any, shared: bool = False) -> Any:
        if not isinstance(data, InStore):
            return pickle.loads(data)
        import ray

        return ray.get(data.ref)

    def released(self, items: list[tuple[int, bool]], peer: int) -> None:
        """Nothing to take back: Ray's store frees what no ref names."""

    def peer_gone(self, peer: int) -> None:
        """As released."""

    def tidy(self) -> None:
        """As released."""

    def close(self) -> None:
        """As released."""
