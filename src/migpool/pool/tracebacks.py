"""A task's traceback, taken in the worker and written out in the parent.

The worker sends each frame as (file, line number, function, source line or None) and each exception's own
lines; the parent formats them with `traceback.StackSummary`, reading any source line the worker could not
(a file the worker cannot see, a script or notebook cell the parent has in its line cache) from its own
`linecache`. So the user sees their file, line and source line.
"""

from __future__ import annotations

import os
import traceback

Frame = tuple[str, int, str, str | None]
# one exception: its frames, its `format_exception_only` lines, and how it relates to the one before it
Link = tuple[list[Frame], list[str], str | None]

_LINKS = {
    "cause": "\nThe above exception was the direct cause of the following exception:\n\n",
    "context": "\nDuring handling of the above exception, another exception occurred:\n\n",
}


class RemoteTraceback(Exception):  # noqa: N818 - named like concurrent.futures' _RemoteTraceback
    """The traceback of an exception raised in a worker (attached as __cause__)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def capture(e: BaseException, skip_file: str | None = None) -> list[Link]:
    """The exception and its chain (newest first), leaving out frames of `skip_file` (the worker loop)."""
    skip = os.path.realpath(skip_file) if skip_file else None
    out: list[Link] = []
    te: traceback.TracebackException | None = traceback.TracebackException.from_exception(e)
    link: str | None = None
    seen: set[int] = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        frames = [
            (f.filename, f.lineno or 0, f.name, f.line or None)
            for f in te.stack
            if skip is None or os.path.realpath(f.filename) != skip
        ]
        out.append((frames, list(te.format_exception_only()), link))
        if te.__cause__ is not None:
            te, link = te.__cause__, "cause"
        elif te.__context__ is not None and not te.__suppress_context__:
            te, link = te.__context__, "context"
        else:
            te = None
    return out


def format_chain(chain: list[Link]) -> str:
    """The text Python would print for the chain; missing source lines come from this process's linecache."""
    parts: list[str] = []
    for frames, exc_only, link in reversed(chain):
        if frames:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.StackSummary.from_list(frames).format())
        parts.extend(exc_only)
        if link:
            parts.append(_LINKS[link])
    return "".join(parts)
