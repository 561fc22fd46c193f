"""`python -m migpool.pool.worker READ_END WRITE_END`: the worker process (main.py)."""

import sys

from .main import main

main(sys.argv[1], sys.argv[2])
