#!/usr/bin/env bash
# `migpool run`: any program, one copy per partition, on a simulated A100-80GB (docs: guides/run.md):
#   bash examples/run_programs.sh
set -euo pipefail
export MIGPOOL_STATE_DIR="$(mktemp -d)"
trap 'rm -rf "$MIGPOOL_STATE_DIR"' EXIT
cd "$MIGPOOL_STATE_DIR"
export MIGPOOL_SIMULATE=A100-80GB

# --8<-- [start:run]
migpool run -p 1g.10gb -n 3 -- \
  python3 -c 'import os; print(os.environ["CUDA_VISIBLE_DEVICES"])'
migpool run --layout 3g.40gb:1,1g.10gb:2 -- \
  echo "copy {index} on {profile}, port {port}"
printf '%s\n' "echo one" "echo two" "echo three" > jobs.txt
migpool run -p 2g.20gb -n 2 --exclusive --jobs jobs.txt  # a queue, one job a line, on whichever copy is free
# (--exclusive: no room for 2g.20gb beside the partitions above, so the idle
# ones go; without it run keeps them)
# --8<-- [end:run]
