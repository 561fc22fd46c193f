"""A task's traceback, taken in the worker and written out in the parent.

The worker sends each frame as (file, line number, function, source line or None) and each exception's own
lines; the parent formats them with `traceback.StackSummary`, reading any source line the worker could not
(a file the worker cannot see, a script or notebook cell the parent has in its line cache) from its own
`linecache`. So the user sees their file, line and source line.
"""

from __future__ import annotations

import linecache
import traceback
from types import TracebackType

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


KEEP_FRAMES = 50  # frames kept from each end of a long traceback (a deep recursion)
OMITTED = "<omitted>"  # the file name of the frame that stands for those left out


def _frames(tb: TracebackType | None, skip: str | None) -> list[Frame]:
    """The traceback's frames, at most KEEP_FRAMES from each end (the walk itself reads no file); a frame of
    `skip` is left out."""
    walked = [(f.f_code, n) for f, n in traceback.walk_tb(tb)]
    if skip is not None:
        walked = [(c, n) for c, n in walked if c.co_filename != skip]
    omitted = 0
    if len(walked) > 2 * KEEP_FRAMES:
        omitted = len(walked) - 2 * KEEP_FRAMES
        walked = walked[:KEEP_FRAMES] + walked[-KEEP_FRAMES:]
    out: list[Frame] = []
    for code, line in walked:
        text = linecache.getline(code.co_filename, line).strip() or None
        out.append((code.co_filename, line, code.co_name, text))
    if omitted:
        out.insert(KEEP_FRAMES, (OMITTED, omitted, "", None))
    return out


def capture(e: BaseException, skip_file: str | None = None) -> list[Link]:
    """The exception and its chain (newest first), leaving out frames of `skip_file` (the worker loop). Bounded:
    a traceback of any depth keeps KEEP_FRAMES frames from each end."""
    out: list[Link] = []
    exc: BaseException | None = e
    link: str | None = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(out) < KEEP_FRAMES:
        seen.add(id(exc))
        only = traceback.format_exception_only(type(exc), exc)
        out.append((_frames(exc.__traceback__, skip_file), only, link))
        if exc.__cause__ is not None:
            exc, link = exc.__cause__, "cause"
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc, link = exc.__context__, "context"
        else:
            exc = None
    return out


def format_chain(chain: list[Link]) -> str:
    """The text Python would print for the chain; missing source lines come from this process's linecache."""
    parts: list[str] = []
    for frames, exc_only, link in reversed(chain):
        if frames:
            parts.append("Traceback (most recent call last):\n")
            cut = next((i for i, f in enumerate(frames) if f[0] == OMITTED), None)
            shown = frames if cut is None else frames[:cut]
            parts.extend(traceback.StackSummary.from_list(shown).format())
            if cut is not None:
                parts.append(f"  ... {frames[cut][1]} frames omitted ...\n")
                parts.extend(traceback.StackSummary.from_list(frames[cut + 1 :]).format())
        parts.extend(exc_only)
        if link:
            parts.append(_LINKS[link])
    return "".join(parts)
