"""Applying layouts: `migpool plan`, `apply`, `assert`, `status` and `teardown`, and the ways a layout is given."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..backend import Backend
from ..integrations import migparted
from ..mig.catalog import GpuModel
from ..mig.layout import OFF, Layout, MachineLayout
from ..reconcile import core as reconcile
from ..reconcile import persist
from ..ui import Kind, items, mib, show, table
from .app import common, emit_json, operations_to, out, shown_uuid
from .persist import save_for_boot

LAYOUT_HELP = """

LAYOUT is a profile with -n N, or profiles with counts (`migpool profiles` lists a GPU's profiles):

\b
  3g.40gb -n 2                      two 3g.40gb partitions
  3g.40gb:1,1g.10gb:4               one 3g.40gb and four 1g.10gb
  1c.3g.40gb:3                      three compute instances of 3g.40gb
  --partitions 4 --min-memory 16GB  the largest profile giving 4
  off --gpu 1                       MIG off: a whole GPU
  -f config.yaml -c all-3g.40gb     a config of mig-parted
"""


def layout_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """LAYOUT and the other ways a layout is given (LAYOUT_HELP, added to the command's help)."""

    @click.argument("layout", required=False)
    @click.option("-n", "--count", type=int, default=None, help="How many of the profile given as LAYOUT.")
    @click.option("-f", "--file", "config_file", type=click.Path(dir_okay=False), help="A mig-parted config file.")
    @click.option("-c", "--config", "config_name", help="Config name inside the -f file.")
    @click.option("--partitions", type=int, help="Instead of a profile: this many partitions, the largest that fit.")
    @click.option("--min-memory", help="With --partitions: each at least this much memory (e.g. 16GB).")
    @functools.wraps(fn)
    def wrapper(
        layout: str | None,
        count: int | None,
        config_file: str | None,
        config_name: str | None,
        partitions: int | None,
        min_memory: str | None,
        backend: Backend,
        **kw: Any,
    ) -> Any:
        desired = parse_layout_args(backend, layout, count, config_file, config_name, partitions, min_memory)
        return fn(desired=desired, backend=backend, **kw)

    wrapper.__doc__ = (fn.__doc__ or "").rstrip() + LAYOUT_HELP
    return wrapper


def parse_layout_args(
    backend: Backend,
    layout: str | None,
    count: int | None,
    config_file: str | None,
    config_name: str | None,
    partitions: int | None,
    min_memory: str | None,
) -> MachineLayout:
    given = sum(x is not None for x in (layout, config_file, partitions))
    if given != 1:
        raise click.UsageError(
            "give exactly one layout: PROFILE [-n N], 'P1:N1,P2:N2', -f FILE [-c NAME], or --partitions N"
        )
    if config_file:
        entries = migparted.load(config_file, config_name)
        return migparted.machine_layout(entries, backend)
    if partitions is not None:
        return MachineLayout.of(Layout.of(partitions=partitions, min_memory=min_memory))
    assert layout is not None
    if count is not None:
        if layout.strip().lower() == OFF:
            raise click.UsageError("`off` (MIG off: a whole GPU) takes no -n; choose its GPUs with --gpu")
        if ":" in layout or "," in layout:
            raise click.UsageError("-n goes with a single profile (e.g. '3g.40gb -n 2'), not with a list")
        layout = f"{layout}:{count}"
    return MachineLayout.of(layout)


def _picture(model: GpuModel, plan: reconcile.GpuPlan) -> list[str]:
    lines = []
    tag = {
        **{i: "keep" for i in plan.transition.keep},
        **{i: "destroy" for i in plan.transition.destroy},
        **{i: "create" for i in plan.transition.create},
    }
    color = {"keep": "green", "destroy": "red", "create": "cyan"}
    final = list(plan.transition.keep) + list(plan.transition.create)
    for inst, what in sorted(tag.items(), key=lambda kv: (kv[0].start, kv[1] != "destroy")):
        bar = "".join("■" if s in inst.placement.slots else "·" for s in range(model.memory_slices))
        cis = plan.devices_after(inst) if what != "destroy" else []
        inside = " ".join(n.split(".")[0] for n in cis) if cis != [inst.profile.name] else ""
        lines.append(
            f"  [{color[what]}]{what:<8}[/] {inst.profile.name:<12} {bar}  {str(inst.placement):<5} {inside}".rstrip()
        )
    used = set().union(*(i.placement.slots for i in final)) if final else set()
    free = "".join("·" if s in used else "□" for s in range(model.memory_slices))
    lines.append(f"  {'free':<8} {'':<12} {free}  ({model.memory_slices - len(used)} memory slice(s) free)")
    return lines


@click.command()
@common
@layout_options
@click.option("--reset", is_flag=True, help="Plan a GPU reset where a MIG mode change is pending.")
def plan(desired: MachineLayout, backend: Backend, gpus: list[str] | None, as_json: bool, reset: bool) -> None:
    """What `apply` would do, changing nothing: operations and a picture of each GPU's slices."""
    p = reconcile.plan_apply(desired, backend, gpus=gpus, reset=reset, force=True)
    _show_plan(p, as_json)


def _show_plan(p: reconcile.ApplyPlan, as_json: bool) -> None:
    if as_json:
        return emit_json(
            dict(
                operations=[str(o) for o in p.operations],
                disturbed=p.disturbed,
                gpus=[
                    dict(
                        gpu=g.gpu.index,
                        keep=[str(i) for i in g.transition.keep],
                        destroy=[str(i) for i in g.transition.destroy],
                        create=[str(i) for i in g.transition.create],
                    )
                    for g in p.gpus
                ],
            )
        )
    for g in p.gpus:
        out.print(
            f"[bold]GPU {g.gpu.index}[/] {g.gpu.name} — {g.layout}  (memory slices 0..{g.model.memory_slices - 1})"
        )
        for line in _picture(g.model, g):
            out.print(line, highlight=False)
        if g.busy:
            out.print("  [yellow]--force will stop:[/] " + ", ".join(f"PID {x.pid} ({x.name})" for x in g.busy))
    ops = p.operations
    out.print(
        f"{len(ops)} operation(s); {p.disturbed} existing partition(s) disturbed"
        if ops
        else "Nothing to do: the GPUs already match."
    )
    for o in ops:
        out.print(f"  {o}", highlight=False)


@click.command(name="apply")
@common
@layout_options
@click.option("--force", is_flag=True, help="Stop processes on partitions that must be destroyed.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option("--reset", is_flag=True, help="Reset GPUs whose MIG mode change is pending (only then).")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for another apply.")
@click.option("--persist", is_flag=True, help="Also save the layout for `migpool boot` to apply at every boot.")
@click.option(
    "--config-file",
    "saved_file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Where --persist saves it (default {persist.DEFAULT_CONFIG_FILE}, or ${persist.CONFIG_FILE_ENV}).",
)
def apply_cmd(
    desired: MachineLayout,
    backend: Backend,
    gpus: list[str] | None,
    as_json: bool,
    force: bool,
    dry_run: bool,
    reset: bool,
    lock_timeout: float,
    persist: bool,
    saved_file: str | None,
) -> None:
    """Make the GPUs match LAYOUT with the fewest changes; print the MIG UUIDs."""
    if dry_run:
        return _show_plan(reconcile.plan_apply(desired, backend, gpus=gpus, force=force, reset=reset), as_json)
    with out.status("applying…") as status:
        res = reconcile.apply(
            desired,
            backend,
            gpus=gpus,
            force=force,
            reset=reset,
            lock_timeout=lock_timeout,
            progress=None if as_json else operations_to(out, status),
        )
    assert res.plan is not None  # apply always returns its plan
    before = {u for g in res.plan.gpus for a in g.actual for u in a.uuids}  # (read under apply's lock)
    saved = save_for_boot(backend, [(g.gpu.index, g.layout) for g in res.plan.gpus], saved_file) if persist else None
    made = set(res.mig_devices)
    new: list[dict[str, str]] = [
        dict(gpu=str(g.index), profile=d.profile_name, placement=str(d.placement), uuid=d.uuid)
        for g in backend.gpus()
        if g.mig_current and made
        for d in backend.mig_devices(g.index)
        if d.uuid in made
    ]
    if as_json:
        return emit_json(
            dict(
                operations=[str(o) for o in res.operations],
                mig_devices=res.mig_devices,
                partitions=new,
                pending_reset=res.pending_reset,
                saved_to=saved,
            )
        )
    out.print(
        f"[green]done[/]: {len(res.operations)} operation(s)"
        if res.operations
        else "Nothing to do: the GPUs already match."
    )
    if new:
        made_now = [n for n in new if n["uuid"] not in before]
        title = "new partitions" if len(made_now) == len(new) else f"partitions ({len(made_now)} new)"
        columns: list[tuple[str, Kind]] = [("GPU", "num"), ("profile", "text"), ("placement", "text")]
        t = table(title, [*columns, ("MIG UUID", "text"), ("", "text")])
        for n in new:  # the UUID whole: for CUDA_VISIBLE_DEVICES
            t.add_row(n["gpu"], n["profile"], n["placement"], n["uuid"], "" if n["uuid"] in before else "new")
        show(out, t)
    for msg in res.pending_reset:
        out.print(f"[yellow]{msg}[/]: run `migpool apply ... --reset` once nothing uses the GPU, or reboot.")
    if saved:
        out.print(f"saved for `migpool boot`: {saved}", highlight=False)


@click.command()
@common
def status(backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """GPU instances, compute instances, MIG UUIDs, memory used, processes and holders per partition."""
    data: list[dict[str, Any]] = []
    for g in reconcile.select_gpus(backend, gpus):
        procs = backend.processes(g.index)
        devs = backend.mig_devices(g.index) if g.mig_current else []
        data.append(
            dict(
                gpu=g,
                mig_devices=devs,
                processes=procs,
                gpu_instances=backend.gpu_instances(g.index) if g.mig_current else [],
                leases=reconcile.leased(backend, [g.uuid, *(d.uuid for d in devs)]),
            )
        )
    dirs = dict(backend.state_dirs().describe(), saved_layout=str(persist.config_path(None, backend)))
    if as_json:
        return emit_json(dict(state=dirs, gpus=data))
    for d in data:
        g = d["gpu"]
        t = table(
            f"GPU {g.index}: {g.name}, MIG {g.mig_mode_short}",
            [
                ("GI", "num"),
                ("CI", "num"),
                ("profile", "text"),
                ("placement", "text"),
                ("MIG UUID", "text"),
                ("used/total", "num"),
                ("processes", "list"),
            ],
        )
        leases = d["leases"]
        for dev in d["mig_devices"]:
            ps = [p for p in d["processes"] if p.device_uuid == dev.uuid]
            t.add_row(
                str(dev.gi_id),
                str(dev.ci_id),
                dev.profile_name,
                str(dev.placement),
                shown_uuid(dev.uuid),
                f"{dev.memory_used_mib}/{mib(dev.memory_mib)}",
                items([f"{p.name}({p.pid})" for p in ps]),
            )
        whole = [p for p in d["processes"] if p.device_uuid == g.uuid]
        captions = [f"{shown_uuid(u)} held by {who.describe()}" for u, who in leases.items()]
        if not d["mig_devices"]:
            captions.append("no MIG devices" + ("" if g.mig_current else " (MIG is disabled)"))
        if whole:
            captions.append("on the whole GPU: " + items([f"{p.name}({p.pid})" for p in whole]))
        t.caption = "; ".join(captions) or None
        show(out, t)
    out.print(
        f"state: locks and leases in {Path(dirs['locks']).parent}, journal {dirs['journal']}, "
        f"saved layout {dirs['saved_layout']}",
        highlight=False,
    )


@click.command(name="assert")
@common
@layout_options
def assert_cmd(desired: MachineLayout, backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """Exit 0 if the GPUs match LAYOUT, 1 with the differences if not."""
    diffs = reconcile.diff(desired, backend, gpus=gpus)
    if as_json:
        emit_json(dict(match=not diffs, differences=diffs))
    elif diffs:
        for d in diffs:
            out.print(d, highlight=False)
    else:
        out.print("[green]match[/]")
    sys.exit(1 if diffs else 0)


@click.command()
@common
@click.option("--restore", is_flag=True, help="Return each GPU to the state before migpool first changed it.")
@click.option("--force", is_flag=True, help="Stop processes on partitions that must be destroyed.")
def teardown(backend: Backend, gpus: list[str] | None, as_json: bool, restore: bool, force: bool) -> None:
    """Remove the partitions migpool created (or --restore the prior state)."""
    res = reconcile.teardown(
        backend,
        gpus=gpus,
        restore=restore,
        force=force,
        progress=None if as_json else operations_to(out),
    )
    if as_json:
        return emit_json(dict(operations=[str(o) for o in res.operations]))
    out.print(
        f"[green]done[/]: {len(res.operations)} operation(s)" if res.operations else "Nothing migpool created is left."
    )
