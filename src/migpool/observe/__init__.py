"""Observing GPUs and pools: telemetry from NVML, `migpool top`, the Prometheus exporter, pools' published stats."""
