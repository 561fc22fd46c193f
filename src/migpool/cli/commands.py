"""The `migpool` command group, assembled from one module per group of verbs: gpus.py (gpus, profiles, catalog),
layout.py (plan, apply, assert, status, teardown), persist.py (persist, boot, install-service,
uninstall-service), export.py, observe.py (top, metrics), run.py and sim.py (demo, sim)."""

from __future__ import annotations

import click

from .advise import advise_cmd
from .app import Main
from .export import export
from .gpus import catalog_cmd, gpus, profiles
from .layout import apply_cmd, assert_cmd, plan, status, teardown
from .observe import metrics, top
from .persist import boot, install_service, persist_cmd, uninstall_service
from .run import run_cmd
from .sim import demo, sim_cmd


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="migpool")
def main() -> None:
    """migpool: plan, apply and use NVIDIA MIG partitions (simulate any GPU with --simulate)."""


for _command in (
    gpus,
    profiles,
    catalog_cmd,
    plan,
    apply_cmd,
    status,
    assert_cmd,
    teardown,
    export,
    persist_cmd,
    boot,
    install_service,
    uninstall_service,
    top,
    metrics,
    sim_cmd,
    run_cmd,
    demo,
    advise_cmd,
):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
