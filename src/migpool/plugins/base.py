"""The plugin interface: `Plugin`, with no-op hooks, and `Plugin.create(...)`'s `Built`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ..errors import PluginError
from ..pool.api.providers import DynamicMigOptions, Node, WorkerSpec

if TYPE_CHECKING:
    from ..pool.api.image import Image


class Plugin:
    """Base class with no-op hooks; subclass it and override what you need."""

    needs_mig = False  # only nodes with a MIG-capable GPU will do (Ray pools choose their nodes by it)
    # each worker must be a process of its own (its own devices, its own rank): Worker(executor="auto") gives processes
    needs_processes = False
    kind = ""  # its name in the reference's registry (plugins.PLUGINS), for the reference's plugins
    collective = False  # its workers form one group (torch.distributed, jax): a worker lost cannot be replaced

    def workers(self, node: Node) -> int | None:
        """How many workers this node should run when Worker(concurrency=...) is left out (after bootstrap), or
        None for no opinion (then 1 per node, the reference's default)."""
        return None

    def dynamic_mig(self) -> DynamicMigOptions | None:
        """What this plugin asks of dynamic MIG, or None (partitions, if any, are made by bootstrap)."""
        return None

    def transform_image(self, image: Image) -> Image:
        return image

    def validate(self, node: Node) -> None:
        return None

    def bootstrap(self, node: Node) -> None:
        return None

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        return {}

    def preload(self) -> tuple[str, ...]:
        """Modules the pool's warm spares import before they are given a partition (docs/guides/warm.md)."""
        return ()

    def worker_started(self, worker: WorkerSpec, pid: int, node: Node) -> None:
        return None

    def teardown(self, node: Node) -> None:
        return None

    def rollback(self, node: Node) -> None:
        return None

    decorates = False  # decorate() wraps each task's function

    def decorate(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    def around_pool(self, pool: Any) -> AbstractContextManager[Any] | None:
        """A context the pool enters once it is open and leaves as it closes (in this process), or None."""
        return None

    @staticmethod
    def create(name: str) -> Built:
        """A plugin built from functions, as the reference system builds its own:
        `Plugin.create("name").with_image_transform(f).with_decorator(d).with_around_process(cm)` …"""
        return Built(name)


class Built(Plugin):
    """`Plugin.create(name).with_…()`: each `with_` returns a new plugin with one more hook.

    with_image_transform(f)   f(image, node) -> image, before anything is installed
    with_bootstrap(f)         f(node) -> ops, run on each node before its workers start: each op a callable
                              (called) or an argv list (run, and it must succeed); shell strings are refused
    with_decorator(d)         d(fn) -> fn, wrapping each task's function
    with_around_app(cm)       cm(instance_info()) entered in each worker process at its start, left at its end
    with_around_process(cm)   the same (a migpool worker is one process)
    with_around_client(cm)    cm(pool, node) entered in this process once the pool is open, left as it closes
    """

    def __init__(self, name: str, hooks: Mapping[str, tuple[Any, ...]] | None = None) -> None:
        self.name = name
        self.hooks: dict[str, tuple[Any, ...]] = {k: tuple(v) for k, v in (hooks or {}).items()}
        self.decorates = bool(self.hooks.get("decorator"))
        self.needs_processes = bool(self.hooks.get("process"))

    def __repr__(self) -> str:
        return f"Plugin.create({self.name!r})" + "".join(f".with_{k}(…)" for k in self.hooks)

    def _with(self, kind: str, fn: Any) -> Built:
        if not callable(fn):
            raise PluginError(f"Plugin {self.name!r}: with_{kind} takes a function, not {fn!r}")
        return Built(self.name, {**self.hooks, kind: (*self.hooks.get(kind, ()), fn)})

    def with_image_transform(self, f: Callable[[Image, Node], Image]) -> Built:
        return self._with("image", f)

    def with_bootstrap(self, f: Callable[[Node], Any]) -> Built:
        return self._with("bootstrap", f)

    def with_decorator(self, d: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Built:
        return self._with("decorator", d)

    def with_around_app(self, cm: Callable[[Any], AbstractContextManager[Any]]) -> Built:
        return self._with("process", cm)

    def with_around_process(self, cm: Callable[[Any], AbstractContextManager[Any]]) -> Built:
        return self._with("process", cm)

    def with_around_client(self, cm: Callable[[Any, Node], AbstractContextManager[Any]]) -> Built:
        return self._with("client", cm)

    def with_launcher(self, f: Any) -> Built:
        raise PluginError(
            f"Plugin {self.name!r}: with_launcher changes how the reference starts its remote workers; migpool "
            "starts each worker itself (use with_around_process for what runs in it)"
        )

    def transform_image(self, image: Image) -> Image:
        for f in self.hooks.get("image", ()):
            image = f(image, None)
        return image

    def bootstrap(self, node: Node) -> None:
        import subprocess

        for f in self.hooks.get("bootstrap", ()):
            for op in _flat(f(node)):
                if isinstance(op, str):
                    raise PluginError(
                        f"Plugin {self.name!r}: its bootstrap gave the shell command {op!r}; migpool runs no shell "
                        "strings: give an argv list (['apt-get', 'install', '-y', 'x']) or a function"
                    )
                if callable(op):
                    op()
                elif isinstance(op, (list, tuple)) and op and all(isinstance(a, str) for a in op):
                    done = subprocess.run(list(op), capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        raise PluginError(
                            f"Plugin {self.name!r}: {op[0]} exited with code {done.returncode}: "
                            + (done.stderr.strip().splitlines() or [""])[-1][:200]
                        )
                else:
                    raise PluginError(f"Plugin {self.name!r}: a bootstrap op is a function or an argv list, not {op!r}")

    def decorate(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        for d in self.hooks.get("decorator", ()):
            fn = d(fn)
        return fn

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.lifecycle import AROUND_ENV, encode

        found = self.hooks.get("process", ())
        if not found:
            return {}
        known = worker.env.get(AROUND_ENV)  # (another built plugin's contexts come first)
        before = list(_decode(known)) if known else []
        return {AROUND_ENV: encode([*before, *found])}

    def around_pool(self, pool: Any) -> AbstractContextManager[Any] | None:
        found = self.hooks.get("client", ())
        if not found:
            return None
        stack = contextlib.ExitStack()
        for cm in found:
            stack.enter_context(cm(pool, pool.node))
        return stack


def _flat(ops: Any) -> list[Any]:
    if ops is None:
        return []
    if isinstance(ops, (list, tuple)) and not all(isinstance(a, str) for a in ops):
        return [x for op in ops for x in _flat(op)]
    return [ops]


def _decode(text: str) -> list[Any]:
    import base64
    import pickle

    return list(pickle.loads(base64.b64decode(text)))
