"""Dynamic MIG's own policy driven in virtual time: the library's migpool.advise.virtual (moved there from
here), named again for the benchmarks and the pages that cite this file. benchmarks/miso.py uses it."""

from __future__ import annotations

from migpool.advise.virtual import VEffects, VirtualPool, VJob, VScheduler, VWorker

__all__ = ["VEffects", "VJob", "VScheduler", "VWorker", "VirtualPool"]
