"""The plugin chain, one for local and Ray pools alike: every plugin validates (nothing changes if one refuses),
then each bootstraps in turn (a failed bootstrap rolls back those already done, newest first, and is raised);
`finish` tears them down (or rolls them back) in reverse order.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..api.providers import Node, PluginHooks


def validate(plugins: Sequence[PluginHooks], node: Node) -> None:
    for p in plugins:
        p.validate(node)


def bootstrap(plugins: Sequence[PluginHooks], node: Node) -> None:
    """Bootstrap each plugin on `node`; if one fails, undo the ones before it and raise its error."""
    done: list[PluginHooks] = []
    try:
        for p in plugins:
            p.bootstrap(node)
            done.append(p)
    except BaseException:
        for p in reversed(done):
            p.rollback(node)
        raise


def prepare(plugins: Sequence[PluginHooks], node: Node) -> None:
    """validate, then bootstrap (with rollback on failure)."""
    validate(plugins, node)
    bootstrap(plugins, node)


def finish(plugins: Sequence[PluginHooks], node: Node, undo: bool = False) -> None:
    """Tear the plugins down on `node` (or, with `undo`, roll their bootstrap back), newest first."""
    for p in reversed(plugins):
        if undo:
            p.rollback(node)
        else:
            p.teardown(node)
