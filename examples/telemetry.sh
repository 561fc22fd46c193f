#!/usr/bin/env bash
# Telemetry from NVML, no DCGM, on a simulated A100-80GB with partitions (docs: guides/telemetry.md):
#   bash examples/telemetry.sh
set -euo pipefail
export MIGPOOL_STATE_DIR="$(mktemp -d)"
trap 'rm -rf "$MIGPOOL_STATE_DIR"' EXIT
export MIGPOOL_SIMULATE=A100-80GB
migpool apply 3g.40gb:1,1g.10gb:2 > /dev/null

# --8<-- [start:top]
migpool top --once                           # one sample, per GPU and partition (live: `migpool top`, q quits)
migpool top --once --json                    # the same, for scripts
# migpool metrics --port 9400  # the Prometheus exporter, until Ctrl-C
# --8<-- [end:top]
