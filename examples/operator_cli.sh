#!/usr/bin/env bash
# The operator's command line on a simulated pair of A100-80GBs (docs: guides/cli.md). Its state lives in a
# fresh directory, so it changes nothing else:  bash examples/operator_cli.sh
set -euo pipefail
export MIGPOOL_STATE_DIR="$(mktemp -d)"
trap 'rm -rf "$MIGPOOL_STATE_DIR"' EXIT
cd "$MIGPOOL_STATE_DIR"

# --8<-- [start:cli]
export MIGPOOL_SIMULATE=A100-80GB:2
migpool gpus                                 # model, memory, MIG capable, MIG mode (current/pending)
migpool profiles --gpu 0                     # like nvidia-smi mig -lgip -lgipp, with what is still free
migpool plan 3g.40gb -n 2                    # the operations and a picture of the slices; changes nothing
migpool apply 3g.40gb:1,1g.10gb:4            # reconcile, print the new partitions
migpool status                               # GIs, CIs, MIG UUIDs, memory used, processes per partition
migpool assert 3g.40gb:1,1g.10gb:4           # exit 0 if the GPUs match, 1 with the differences
migpool apply 1c.3g.40gb:3 --gpu 1           # compute instances: three inside one 3g.40gb
migpool export -c mine > mine.yaml           # the current state as a mig-parted config
migpool apply -f mine.yaml -c mine           # mig-parted configs apply with mig-parted's rules
migpool teardown --restore                   # back to the state before migpool's first change
# --8<-- [end:cli]

# --8<-- [start:json]
migpool status --json | python3 -c "import json, sys; print(len(json.load(sys.stdin)['gpus']), 'GPUs')"
# --8<-- [end:json]
