#!/usr/bin/env bash
# First steps on a real GPU, read-only (docs: getting-started.md); on a machine without one, add
# MIGPOOL_SIMULATE=H100-80GB. Run as: bash examples/first_gpu.sh
set -euo pipefail
export MIGPOOL_READ_ONLY=1
# --8<-- [start:read]
migpool gpus                                 # the GPUs, their memory and MIG mode
migpool catalog check                        # does the driver's profile table match migpool's catalog?
migpool profiles --gpu 0                     # the MIG profiles of GPU 0, with their placements
migpool plan 3g.40gb:1,1g.10gb:2 --gpu 0     # (H100 names) what apply would do, drawn; changes nothing
# --8<-- [end:read]
