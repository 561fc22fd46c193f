"""Every maximal layout of one GPU model, for the benchmarks' best-static searches (dynamic.py, miso.py): the
library's migpool.advise.model.maximal_layouts (moved there from here), named again for the benchmarks."""

from __future__ import annotations

from migpool.advise.model import maximal_layouts

__all__ = ["maximal_layouts"]
