"""`migpool top` (a live view of the GPUs and partitions) and `migpool metrics` (a Prometheus exporter)."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from ..backend import Backend
from ..reconcile import core as reconcile
from .app import common, emit_json, err, out


def _filtered(snap: Any, gpus: list[str] | None, backend: Backend) -> Any:
    if not gpus:
        return snap
    keep = {g.index for g in reconcile.select_gpus(backend, gpus)}
    return dataclasses.replace(snap, gpus=[g for g in snap.gpus if g.index in keep])


def _sampler(backend: Backend, interval: float, holders: bool = False) -> Any:
    from ..observe.poolstats import running_pools
    from ..observe.telemetry import Sampler

    if not interval > 0:
        raise click.BadParameter(f"must be a positive number of seconds, not {interval}", param_hint="--interval")
    return Sampler(backend, interval, pools=running_pools, holders=holders)


@click.command()
@common
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between samples.")
@click.option("--once", is_flag=True, help="Print one sample and exit (with --json: for scripts).")
def top(backend: Backend, gpus: list[str] | None, as_json: bool, interval: float, once: bool) -> None:
    """Live view: memory, activity (SM, occupancy, tensor, DRAM) and processes per GPU and partition; q quits."""
    from ..observe import top as topview

    with _sampler(backend, interval, holders=True) as sampler:  # (this user's own terminal)
        if once or as_json:
            snap = _filtered(sampler.latest(wait=interval + 5), gpus, backend)  # a full window of activity
            if as_json:
                return emit_json(snap.as_dict())
            out.print(topview.render(snap, bool(click.get_current_context().meta.get("migpool.wide"))))
            return None
        try:
            topview.run(sampler, out, interval, bool(click.get_current_context().meta.get("migpool.wide")))
        except KeyboardInterrupt:
            pass


@click.command()
@common
@click.option("--port", type=int, default=9400, show_default=True, help="Port to serve /metrics on.")
@click.option(
    "--addr", default="0.0.0.0", show_default=True, help="Address to listen on (127.0.0.1: this machine only)."
)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between GPU samples.")
@click.option(
    "--process-metrics",
    is_flag=True,
    help="Also export one series per GPU process, with its PID, user and command name (readable by anyone who "
    "can reach the port).",
)
@click.option(
    "--holders",
    is_flag=True,
    help="Label each partition's series with who holds it: PID, command, user, pool, task, Slurm job, "
    "Kubernetes pod (readable by anyone who can reach the port).",
)
@click.option(
    "--hostname-label",
    type=click.Choice(["Hostname", "hostname"]),
    default="Hostname",
    show_default=True,
    help="The host label's spelling: dcgm-exporter's released one, or its main branch's.",
)
def metrics(
    backend: Backend,
    gpus: list[str] | None,
    as_json: bool,
    port: int,
    addr: str,
    interval: float,
    process_metrics: bool,
    holders: bool,
    hostname_label: str,
) -> None:
    """Serve Prometheus metrics until Ctrl-C: dcgm-exporter's default counters, names and labels (its dashboards
    work unchanged), and migpool_* for partitions and pools."""
    import threading

    from ..observe.exporter import serve

    with _sampler(backend, interval, holders) as sampler:
        server = serve(sampler, port, addr, process_metrics, hostname_label)
        err.print(
            f"serving metrics on http://{addr}:{port}/metrics (every {interval:g} s); Ctrl-C stops", highlight=False
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
