#!/usr/bin/env bash
# The README's Quick start: the demo on a simulated GPU, and the tests (docs: getting-started.md).
set -euo pipefail
# --8<-- [start:quick]
pip install -e '.[demo]' && migpool demo              # a NumPy job on 5 MIG partitions of a simulated A100-80GB
pip install -e '.[test]' && python -m pytest -q       # the tests: no GPU, no network needed
# --8<-- [end:quick]

# --8<-- [start:tests]
pip install -e '.[test]' && python -m pytest -q            # the default run: simulated GPUs, no network
python -m pytest -q -m "slow or network or chaos"          # what it leaves out (CI runs both)
python -m pytest -m gpu tests/gpu                          # read-only, on a machine with an NVIDIA GPU
# --8<-- [end:tests]
