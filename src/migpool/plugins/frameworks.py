"""Plugins for frameworks that run across the pool's workers: `torch`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import PluginError
from ..pool.api.providers import Node, WorkerSpec
from .base import Plugin

if TYPE_CHECKING:
    from ..pool.api.image import Image


class torch(Plugin):  # noqa: N801 - named like the reference system's `plugins.torch`
    """torch.distributed across the pool's workers: each worker is one rank (rank = its global worker index, world
    size = all the pool's workers, master = node 0), joined before its first task, on every node of a Ray pool too.

    torch()                   nccl where it can work, else gloo (CPU tensors, or ranks on MIG instances of one
                              GPU with an NCCL older than 2.31)
    torch(backend="gloo")     gloo, which works anywhere (through host memory)
    torch(backend="nccl")     nccl, refused with the reason where it cannot work (pool/distributed.py says why)

    version= / vision= / audio= add torch (and torchvision, torchaudio) to the workers' Image, as the reference's
    plugin does; nothing is installed where the worker's Python has them already. A worker that dies leaves the
    process group without it: its replacement cannot rejoin, so the pool fails its tasks rather than hang.
    """

    needs_processes = True

    def __init__(
        self,
        backend: str | None = None,
        cuda: str = "cu128",
        version: str = "latest",
        vision: str | None = None,
        audio: str | None = None,
    ) -> None:
        if backend not in (None, "nccl", "gloo"):
            raise PluginError(
                f"torch(backend=...) is 'nccl', 'gloo' or left out (the best that works), not {backend!r}"
            )
        self.backend = backend or "auto"
        self.cuda = cuda  # (the reference's wheel index suffix; migpool installs from the workers' own index)
        self.packages = [p for p in (_pinned("torch", version), _pinned("torchvision", vision)) if p]
        self.packages += [p for p in (_pinned("torchaudio", audio),) if p]

    def preload(self) -> tuple[str, ...]:
        return ("torch",)  # most of a fresh worker's start-up: import it before the partition is known

    def transform_image(self, image: Image) -> Image:
        import dataclasses

        return dataclasses.replace(image, pip=(*image.pip, *(p for p in self.packages if p not in image.pip)))

    def validate(self, node: Node) -> None:
        if node.worker is not None and node.worker.executor == "thread":
            raise PluginError("plugins.torch() makes each worker a rank of its own: use Worker(executor='process')")

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.distributed import BACKEND_ENV, INIT_ENV

        return {INIT_ENV: "migpool.pool.worker.distributed:init", BACKEND_ENV: self.backend}


def _pinned(name: str, version: str | None) -> str | None:
    """A pip requirement as the reference's torch plugin writes it: 'latest', '>=2.4', '==2.4.1' or '2.4.1'."""
    if version is None:
        return None
    if version == "latest":
        return name
    return f"{name}{version}" if version[0] in "<>=!~" else f"{name}=={version}"
