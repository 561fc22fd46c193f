"""Context managers that a plugin runs in each worker process, around its life (the reference's
`Plugin.with_around_app` / `with_around_process`): pickled by the pool into the worker's environment, entered by
the worker before it says it is ready, left when it exits."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

AROUND_ENV = "MIGPOOL_AROUND"  # base64 of the pickled list of factories: factory(instance_info()) -> context


def encode(factories: Sequence[Callable[[Any], Any]]) -> str:
    from ..wire.pickling import cloud_dumps

    return base64.b64encode(cloud_dumps(list(factories))).decode()


def enter() -> contextlib.ExitStack:
    """Enter, in this worker process, what AROUND_ENV holds; the stack leaves them in reverse order."""
    import pickle

    from ..api.info import instance_info

    stack = contextlib.ExitStack()
    text = os.environ.get(AROUND_ENV)
    if text:
        info = instance_info()
        for factory in pickle.loads(base64.b64decode(text)):
            stack.enter_context(factory(info))
    return stack
