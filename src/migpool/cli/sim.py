"""Trying migpool without a MIG GPU: `migpool demo` (a workload on partitions of a simulated GPU, or with --real
of this one; the workload is in demo.py, imported only when the demo runs) and `migpool sim` (what happens to a
simulated machine outside migpool: a reboot)."""

from __future__ import annotations

import os

import click

from ..backend import SIMULATE_ENV, Backend
from ..errors import MigpoolError
from .app import common, emit_json, fail, out


@click.group(name="sim")
def sim_cmd() -> None:
    """Simulated machines only: what happens to real hardware outside migpool (a reboot)."""


@sim_cmd.command(name="reboot")
@common
def sim_reboot(backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """Reboot the simulated machine: GPU and compute instances are gone, MIG mode stays (as on A100/H100)."""
    from ..backend.simulated import SimulatedBackend

    if not isinstance(backend, SimulatedBackend):
        raise click.UsageError("`migpool sim reboot` works on simulated GPUs only (--simulate or $MIGPOOL_SIMULATE)")
    backend.reboot()
    if as_json:
        return emit_json({"rebooted": backend.spec, "gpu_instances": 0, "mig_modes_kept": True})
    click.echo(f"rebooted the simulated machine {backend.spec}: no GPU instances left, MIG modes kept")


@click.command()
@click.option("--simulate", "simulate", metavar="SPEC", default=None, help="Simulated GPU (default: A100-80GB).")
@click.option("--layout", "layout_text", default=None, help="Partitions, e.g. '3g.40gb:1,1g.10gb:4' (the default).")
@click.option("--real", is_flag=True, help="Use this machine's MIG-capable GPU 0 (changes its MIG layout; needs root).")
@click.option("--wide", is_flag=True, help="Full UUIDs in the table.")
def demo(simulate: str | None, layout_text: str | None, real: bool, wide: bool) -> None:
    """Run a small NumPy workload on MIG partitions and print a table per partition."""
    from ..mig.layout import parse_counts
    from .demo import DEMO_LAYOUT, run

    if real and simulate:
        raise click.UsageError("--real and --simulate exclude each other")
    layout = dict(parse_counts(layout_text)) if layout_text else DEMO_LAYOUT
    spec = None if real else (simulate or os.environ.get(SIMULATE_ENV) or "A100-80GB")
    try:
        run(spec, layout, out, wide=wide)
    except MigpoolError as e:
        fail(e)
