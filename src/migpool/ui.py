"""Tables that people read in an 80-column terminal: no borders to spare, atomic values never cut.

A column is `text` (names, modes, UUIDs: kept whole, never wrapped), `num` (right-aligned, kept whole) or
`list` (comma-separated items that may wrap between items). UUIDs are shortened unless `wide`.
"""

from __future__ import annotations

from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

Kind = Literal["text", "num", "list"]
ESTIMATE_MARK = "~"


class _Table(Table):
    """A rich Table whose text and number columns never shrink below their widest cell."""

    def add_row(self, *cells: Any, **kw: Any) -> None:
        for col, cell in zip(self.columns, cells, strict=False):
            if col.no_wrap and isinstance(cell, str):
                col.min_width = max(col.min_width or 0, cell_len(cell), cell_len(str(col.header)))
        super().add_row(*cells, **kw)


def table(title: str | None, columns: list[tuple[str, Kind]], caption: str | None = None) -> Table:
    t = _Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title_justify="left",
        caption_justify="left",
    )
    for header, kind in columns:
        if kind == "list":
            t.add_column(header, overflow="fold", ratio=1, min_width=max(9, len(header)))
        else:
            t.add_column(header, no_wrap=True, justify="right" if kind == "num" else "left")
    return t


def short_uuid(uuid: str, wide: bool = False) -> str:
    """'MIG-93892f32-…' -> 'MIG-93892f32…' (the prefix and first group identify it on one machine)."""
    if wide or len(uuid) <= 13:
        return uuid
    head = uuid.split("-")
    if len(head) >= 2 and head[0] in ("MIG", "GPU"):
        return f"{head[0]}-{head[1]}…"
    return uuid[:12] + "…"


def items(values: list[str]) -> str:
    """A list for a `list` column (items without spaces, so that a wrap falls between them)."""
    return ", ".join(values) or "-"


def mib(value: int | float, estimated: bool = False) -> str:
    return f"{ESTIMATE_MARK if estimated else ''}{int(value)} MiB"


def number(value: int, estimated: bool = False) -> str:
    return f"{ESTIMATE_MARK if estimated else ''}{value}"


def show(console: Console, t: Table) -> None:
    """Print a table at the terminal's width, or wider (never cut) when its whole cells need more (--wide)."""
    need = Measurement.get(console, console.options.update_width(10_000), t).minimum
    console.print(t, width=max(console.width, need), crop=False)


def comment(text: str, width: int = 80) -> list[str]:
    """A comment's words as '# ' lines of at most `width` columns (config files and scripts' output)."""
    import textwrap

    return textwrap.wrap(text, width, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False) or ["#"]
