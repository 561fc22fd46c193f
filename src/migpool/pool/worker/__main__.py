"""`python -m migpool.pool.worker READ_END WRITE_END`: the worker process (main.py); a warm spare (spares.py, where
$MIGPOOL_SPARE is set) first waits for its partition."""

import os
import sys

from .main import main
from .spares import SPARE_ENV, park

if os.environ.get(SPARE_ENV):
    park(sys.argv[1])
main(sys.argv[1], sys.argv[2])
