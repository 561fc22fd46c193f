"""The layout kept across reboots: `migpool persist`, `boot`, `install-service` and `uninstall-service`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import click

from ..backend import SIMULATE_ENV, Backend, open_backend
from ..errors import MigpoolError
from ..mig.layout import Layout
from ..reconcile import core as reconcile
from ..reconcile import persist, service
from .app import common, emit_json, err, fail, out


def save_for_boot(backend: Backend, layouts: list[tuple[int, Layout]], config_file: str | None) -> str:
    """Save these GPUs' layouts (as exact profile counts), keeping what the saved file says of other GPUs."""
    path = persist.config_path(config_file, backend)
    exact = [(i, persist.exact(backend, i, layout)) for i, layout in layouts]
    mine = {i for i, _ in exact}
    kept: list[tuple[int, Layout]] = []
    if path.exists():
        before = persist.load(backend, path)
        kept = [
            (g.index, lay)
            for g in backend.gpus()
            if g.index not in mine
            for lay in [before.for_gpu(g.index)]
            if lay is not None
        ]
    persist.save(sorted(kept + exact), backend.gpus(), path)
    for note in persist.placement_drift(backend, exact):
        err.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    return str(path)


@click.command(name="persist")
@common
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Where to save it (default {persist.DEFAULT_CONFIG_FILE}, or ${persist.CONFIG_FILE_ENV}).",
)
def persist_cmd(backend: Backend, gpus: list[str] | None, as_json: bool, config_file: str | None) -> None:
    """Save the current layout of the GPUs for `migpool boot` to apply at every boot."""
    path = save_for_boot(backend, persist.current_layouts(backend, gpus), config_file)
    if as_json:
        return emit_json(dict(saved_to=path))
    out.print(f"saved for `migpool boot`: {path}", highlight=False)


@click.command()
@common
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"The saved layout (default {persist.DEFAULT_CONFIG_FILE}, or ${persist.CONFIG_FILE_ENV}).",
)
@click.option(
    "--hooks",
    "hooks_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A hooks file: services to stop before a change and start after it.",
)
@click.option("--dry-run", is_flag=True, help="List what boot would do; change nothing.")
@click.option("--reset", is_flag=True, help="Reset GPUs whose MIG mode change is pending.")
def boot(
    backend: Backend,
    gpus: list[str] | None,
    as_json: bool,
    config_file: str | None,
    hooks_file: str | None,
    dry_run: bool,
    reset: bool,
) -> None:
    """Apply the saved layout (at boot, from the systemd unit); one line per GPU for the journal."""
    from ..backend.base import read_only

    desired = persist.load(backend, config_file)
    services = service.load_hooks(Path(hooks_file)) if hooks_file else []
    plan = reconcile.plan_apply(desired, backend, gpus=gpus, reset=reset)
    if dry_run or read_only() or not plan.operations:
        why = "dry run" if dry_run else "MIGPOOL_READ_ONLY is set" if plan.operations else ""
        if as_json:
            return emit_json(
                dict(
                    changed=False,
                    reason=why or "already matches",
                    gpus={g.gpu.index: [str(o) for o in g.operations] for g in plan.gpus},
                )
            )
        for g in plan.gpus:
            line = (
                f"would run {len(g.operations)} operation(s): "
                + "; ".join(str(o).split(": ", 1)[-1] for o in g.operations)
                if g.operations
                else f"matches the saved layout ({_describe(g.transition.keep)})"
            )
            click.echo(
                f"migpool boot: GPU {g.gpu.index} ({g.gpu.uuid}): {line}" + (f" [{why}]" if g.operations else "")
            )
        return None
    with service.services_stopped(services, service.Systemctl(), lambda s: click.echo(f"migpool boot: {s}")):
        res = reconcile.apply(desired, backend, gpus=gpus, reset=reset)
    if as_json:
        return emit_json(dict(changed=True, operations=[str(o) for o in res.operations], mig_devices=res.mig_devices))
    assert res.plan is not None  # apply always returns its plan
    for g in res.plan.gpus:
        now = (
            [a.instance for a in reconcile.actual_instances(backend, g.gpu.index)]
            if backend.gpu(g.gpu.index).mig_current
            else []
        )
        what = f"{len(g.operations)} operation(s), now {_describe(now)}" if g.operations else "already matched"
        click.echo(f"migpool boot: GPU {g.gpu.index} ({g.gpu.uuid}): {what}")
    for msg in res.pending_reset:
        click.echo(f"migpool boot: {msg}; run `migpool boot --reset` once nothing uses the GPU")


def _describe(instances: Any) -> str:
    return ", ".join(str(i) for i in sorted(instances, key=lambda i: i.placement.start)) or "no partitions"


@click.command(name="install-service")
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"The saved layout the unit applies [default: ${persist.CONFIG_FILE_ENV}, else {persist.DEFAULT_CONFIG_FILE};"
    f" beside the simulated state with ${SIMULATE_ENV}].",
)
@click.option("--unit-dir", type=click.Path(file_okay=False), default=service.DEFAULT_UNIT_DIR, show_default=True)
@click.option("--hooks-file", type=click.Path(dir_okay=False), default=service.DEFAULT_HOOKS_FILE, show_default=True)
@click.option(
    "--stop",
    "stop",
    multiple=True,
    metavar="UNIT",
    help="A service to stop before a change and start after it (repeatable; writes the hooks file).",
)
@click.option("--dry-run", is_flag=True, help="Print the files; write nothing.")
@click.option(
    "--enable/--no-enable", default=True, help="Run systemctl daemon-reload and enable (where systemctl exists)."
)
def install_service(
    config_file: str | None, unit_dir: str, hooks_file: str, stop: tuple[str, ...], dry_run: bool, enable: bool
) -> None:
    """Write migpool.service (runs `migpool boot` at boot, before the GPU's clients) and the hooks file."""
    hooks = Path(hooks_file) if stop else None
    simulated = open_backend(None) if os.environ.get(SIMULATE_ENV) else None
    config_file = str(persist.config_path(config_file, simulated))
    if simulated is not None:
        err.print(f"note: a simulated machine: the unit applies {config_file}", highlight=False)
    if dry_run:
        click.echo(f"# {Path(unit_dir) / service.UNIT_NAME}\n{service.unit_text(Path(config_file), hooks)}")
        if stop:
            click.echo(f"# {hooks_file}\n{service.hooks_text(stop)}", nl=False)
        return
    try:
        written = service.install(Path(unit_dir), Path(config_file), hooks, stop)
    except OSError as e:
        fail(MigpoolError(f"cannot write {e.filename}: {e.strerror}; run as root, or choose --unit-dir"))
    for path in written:
        click.echo(f"wrote {path}")
    if enable and service.systemctl_available():
        for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", service.UNIT_NAME]):
            if subprocess.run(argv, check=False).returncode != 0:
                fail(MigpoolError(f"`{' '.join(argv)}` failed; the files are written: run it by hand"))
        click.echo(f"enabled {service.UNIT_NAME}: it runs `migpool boot` at every boot")
    else:
        click.echo(f"enable it with: systemctl daemon-reload && systemctl enable {service.UNIT_NAME}")


@click.command(name="uninstall-service")
@click.option("--unit-dir", type=click.Path(file_okay=False), default=service.DEFAULT_UNIT_DIR, show_default=True)
@click.option("--hooks-file", type=click.Path(dir_okay=False), default=service.DEFAULT_HOOKS_FILE, show_default=True)
@click.option(
    "--enable/--no-enable", "disable", default=True, help="Run systemctl disable first (where systemctl exists)."
)
def uninstall_service(unit_dir: str, hooks_file: str, disable: bool) -> None:
    """Disable and remove migpool.service and the hooks file (the saved layout stays)."""
    if disable and service.systemctl_available():
        subprocess.run(["systemctl", "disable", service.UNIT_NAME], check=False)
    removed = service.uninstall(Path(unit_dir), Path(hooks_file))
    click.echo("\n".join(f"removed {p}" for p in removed) or "nothing to remove")
