#!/usr/bin/env bash
# A layout that survives a reboot, and what to tell Slurm and Kubernetes, on a simulated pair of H100s
# (docs: guides/schedulers.md):  bash examples/reboots_and_schedulers.sh
set -euo pipefail
export MIGPOOL_STATE_DIR="$(mktemp -d)"
trap 'rm -rf "$MIGPOOL_STATE_DIR"' EXIT

# --8<-- [start:persist]
export MIGPOOL_SIMULATE=H100-80GB:2
migpool apply 3g.40gb:1,2g.20gb:1,1g.10gb:2 --gpu 0 --persist   # saved beside the simulated state
migpool sim reboot                           # what a reboot does: every GPU and compute instance is gone
migpool boot                                 # the saved layout, applied again (what migpool.service runs)
migpool install-service --dry-run            # the systemd unit that runs `migpool boot` at boot
# --8<-- [end:persist]

# --8<-- [start:export]
migpool export --slurm                       # gres.conf and slurm.conf lines a real slurmd accepts
migpool export --k8s                         # the device plugin's resources, GFD's labels, a ConfigMap
# --8<-- [end:export]
