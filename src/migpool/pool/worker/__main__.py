"""`python -m migpool.pool.worker READ_END WRITE_END`: the worker process (main.py); a warm spare (spares.py, where
$MIGPOOL_SPARE, spares.SPARE_ENV, is set) first waits for its partition."""

import os
import sys

from .main import main

if os.environ.get("MIGPOOL_SPARE"):  # (spares.py is imported by spares alone: a fresh worker pays nothing for it)
    from .spares import park

    park(sys.argv[1])
main(sys.argv[1], sys.argv[2])
