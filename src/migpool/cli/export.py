"""`migpool export`: the current or saved layout as a mig-parted config, or as Slurm or Kubernetes sees it."""

from __future__ import annotations

import click

from ..backend import Backend
from ..integrations import migparted
from ..reconcile import core as reconcile
from ..reconcile import persist
from .app import common, emit_json


@click.command()
@common
@click.option("-c", "--config", "name", default="current", show_default=True, help="Name of the config to write.")
@click.option("--slurm", is_flag=True, help="gres.conf and slurm.conf lines for this node instead.")
@click.option("--k8s", is_flag=True, help="What the NVIDIA device plugin advertises (mixed and single strategies).")
@click.option("--saved", is_flag=True, help="Export the layout saved for boot, not the current one.")
@click.option(
    "--config-file", type=click.Path(dir_okay=False), default=None, help="The saved layout's file (with --saved)."
)
@click.option("--node-name", default=None, help="Slurm NodeName (default: this host's short name).")
@click.option(
    "--autodetect",
    type=click.Choice(["off", "nvml"]),
    default="off",
    show_default=True,
    help="With --slurm: explicit device files (any slurmd), or AutoDetect=nvml (a slurmd built with NVML).",
)
@click.option("--dev-root", default="", metavar="DIR", help="With --slurm: device paths under DIR (containers, tests).")
def export(
    backend: Backend,
    gpus: list[str] | None,
    as_json: bool,
    name: str,
    slurm: bool,
    k8s: bool,
    saved: bool,
    config_file: str | None,
    node_name: str | None,
    autodetect: str,
    dev_root: str,
) -> None:
    """The current (or --saved) layout as a mig-parted config, or as Slurm (--slurm) or Kubernetes (--k8s) sees it."""
    if slurm and k8s:
        raise click.UsageError("choose one of --slurm and --k8s")
    if not slurm and (autodetect != "off" or dev_root):
        raise click.UsageError("--autodetect and --dev-root go with --slurm")
    if saved:
        wanted = persist.load(backend, config_file)
        per_gpu = [
            (g.index, lay)
            for g in reconcile.select_gpus(backend, gpus)
            for lay in [wanted.for_gpu(g.index)]
            if lay is not None
        ]
        per_gpu = [(i, persist.exact(backend, i, lay)) for i, lay in per_gpu]
    else:
        per_gpu = persist.current_layouts(backend, gpus)
    if slurm:
        import socket

        from ..integrations import slurm as slurm_conf

        node = slurm_conf.node_gres(
            backend,
            per_gpu,
            node_name or socket.gethostname().split(".")[0],
            autodetect=autodetect == "nvml",
            live=not saved,
        )
        if as_json:
            gres_lines, slurm_lines = slurm_conf.render(node, dev_root=dev_root)
            return emit_json(
                dict(
                    node=node.node,
                    gres=node.gres,
                    devices=[
                        dict(
                            type=d.type,
                            gpu=d.gpu,
                            uuid=d.uuid,
                            files=list(d.files.paths(dev_root)) if d.files else None,
                        )
                        for d in node.devices
                    ],
                    gres_conf=gres_lines,
                    slurm_conf=slurm_lines,
                )
            )
        return click.echo(slurm_conf.export(node, dev_root=dev_root), nl=False)
    every = backend.gpus()
    text = migparted.dump(name, per_gpu, [g.index for g in every], {g.index: g.pci_device_id for g in every})
    if k8s:
        import socket

        from ..integrations import kubernetes

        seen = kubernetes.view(backend, per_gpu)
        cm = kubernetes.configmap(name, text)
        host = node_name or socket.gethostname().split(".")[0]
        if as_json:
            return emit_json(
                dict(
                    mixed=seen.mixed,
                    single=seen.single,
                    single_note=seen.single_reason,
                    labels=seen.labels,
                    notes=list(seen.notes),
                    configmap=cm,
                    node_label={"nvidia.com/mig.config": name},
                )
            )
        click.echo(kubernetes.describe(seen, cm, name, host), nl=False)
        return None
    if as_json:
        import yaml

        return emit_json(yaml.safe_load(text))
    click.echo(text, nl=False)
