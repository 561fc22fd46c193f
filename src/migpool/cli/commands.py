"""The `migpool` command line: GPUs, profiles, plan/apply/assert/status/teardown/export, catalog, demo."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..backend import SIMULATE_ENV, Backend, open_backend
from ..errors import EstimateWarning, MigpoolError
from ..integrations import migparted
from ..mig import catalog
from ..mig.catalog import GpuModel, format_placements
from ..mig.layout import Layout, MachineLayout
from ..mig.planner import PlannedInstance, max_addable
from ..reconcile import core as reconcile
from ..reconcile import persist, service
from ..ui import items, mib, number, short_uuid, show, table

out = Console()
err = Console(stderr=True)


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x


def _progress_to(status: Any) -> Callable[[str], None]:
    """apply's progress callback: the spinner's text, and one line per step."""

    def say(text: str) -> None:
        status.update(text)
        out.print(f"  {text}", highlight=False)

    return say


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(_jsonable(data), indent=2, default=str))


@contextmanager
def notes() -> Iterator[None]:
    """Estimate warnings raised while a command runs become one 'note:' line on stderr, at the end."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EstimateWarning)
        try:
            yield
        finally:
            keys: list[str] = []
            for w in caught:
                if isinstance(w.message, EstimateWarning):
                    keys.extend(w.message.models)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            if keys:
                text = textwrap.fill(f"note: {catalog.estimate_note(keys)}", 80, subsequent_indent="  ")
                err.print(text, highlight=False, markup=False, soft_wrap=True)


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--simulate, --gpu, --json and --wide on every command; MigpoolError becomes one clear line and exit 2."""

    @click.option(
        "--simulate",
        "simulate",
        metavar="SPEC",
        default=None,
        help=f"Use simulated GPUs, e.g. A100-80GB or H100-80GB:2 (also ${SIMULATE_ENV}).",
    )
    @click.option("--gpu", "gpus", multiple=True, metavar="INDEX|UUID", help="Only these GPUs (repeatable).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @click.option("--wide", is_flag=True, help="Full UUIDs in tables.")
    @functools.wraps(fn)
    def wrapper(simulate: str | None, gpus: tuple[str, ...], as_json: bool, wide: bool, **kw: Any) -> Any:
        with notes():
            try:
                backend = open_backend(simulate)
            except MigpoolError as e:
                _fail(e)
            try:
                click.get_current_context().meta["migpool.wide"] = wide
                return fn(backend=backend, gpus=list(gpus) or None, as_json=as_json, **kw)
            except MigpoolError as e:
                _fail(e)
            finally:
                backend.close()

    return wrapper


def _fail(e: BaseException | str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def _uuid(uuid: str) -> str:
    """A UUID as tables show it: shortened unless --wide."""
    return short_uuid(uuid, bool(click.get_current_context().meta.get("migpool.wide")))


def _estimated(backend: Backend, index: int) -> GpuModel:
    """The GPU's model, noting (once, on stderr) when its memory figures are estimates."""
    model = backend.model(index)
    catalog.warn_if_estimated(model)
    return model


class _Main(click.Group):
    """The command group: a migpool error raised anywhere in a command is one `error:` line (exit 2), and so is a
    usage error (an unknown option, a missing argument), with where to read more, not click's usage block."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, standalone_mode: bool = True, **kw: Any
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **kw)
        try:
            super().main(args, prog_name, standalone_mode=False, **kw)
        except click.UsageError as e:
            if e.ctx is not None and isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                click.echo(e.ctx.get_help())
                sys.exit(0)
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            _fail(f"{e.format_message()}{where}")
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        sys.exit(0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MigpoolError as e:
            _fail(e)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="migpool")
def main() -> None:
    """migpool: plan, apply and use NVIDIA MIG partitions (simulate any GPU with --simulate)."""


@main.command()
@common
def gpus(backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """List GPUs: name, memory, MIG mode (N/A: not MIG-capable), UUID."""
    rows = reconcile.select_gpus(backend, gpus)
    if as_json:
        return _emit_json(rows)
    t = table(
        f"GPUs ({backend.kind})",
        [("#", "num"), ("name", "list"), ("memory", "num"), ("MIG mode", "text"), ("UUID", "text")],
    )
    pending = False
    for g in rows:
        mode = g.mig_mode_short
        pending = pending or "→" in mode
        t.add_row(str(g.index), g.name, mib(g.memory_mib), mode, _uuid(g.uuid))
    if pending:
        t.caption = "A→B: MIG mode A now, B once the GPU is reset (`migpool apply LAYOUT --reset`)."
    show(out, t)


def _instances(backend: Backend, gpu: int) -> list[PlannedInstance]:
    return [a.instance for a in reconcile.actual_instances(backend, gpu)] if backend.gpu(gpu).mig_current else []


@main.command()
@common
def profiles(backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """The MIG profile table of each GPU, read from the GPU (like `nvidia-smi mig -lgip -lgipp`)."""
    data: list[dict[str, Any]] = []
    for g in reconcile.select_gpus(backend, gpus):
        if not g.mig_capable:
            data.append(dict(gpu=g.index, name=g.name, profiles=[]))
            continue
        model = _estimated(backend, g.index)
        have = _instances(backend, g.index)
        rows = [
            dict(
                name=p.name,
                id=p.id,
                slices=p.slices,
                memory_mib=p.memory_mib,
                sms=p.sms,
                max_instances=p.max_instances,
                free=max_addable(model, p, have),
                placements=format_placements(p.placements),
            )
            for p in model.profiles
        ]
        data.append(dict(gpu=g.index, name=g.name, profiles=rows, estimated=list(model.estimated)))
    if as_json:
        return _emit_json(data)
    for d in data:
        t = table(
            f"GPU {d['gpu']}: {d['name']}",
            [
                ("profile", "text"),
                ("id", "num"),
                ("slices", "num"),
                ("memory", "num"),
                ("SMs", "num"),
                ("max", "num"),
                ("free", "num"),
                ("placements", "text"),
            ],
        )
        for r in d["profiles"]:
            t.add_row(
                r["name"],
                str(r["id"]),
                str(r["slices"]),
                mib(r["memory_mib"], "memory_mib" in d["estimated"]),
                number(r["sms"], "sms" in d["estimated"]),
                str(r["max_instances"]),
                str(r["free"]),
                r["placements"],
            )
        t.caption = (
            "not MIG-capable"
            if not d["profiles"]
            else "placements: {start slices}:size, as nvidia-smi mig -lgipp prints them; free: how many more fit now"
            + ("; ~: estimate" if d["estimated"] else "")
        )
        show(out, t)


def layout_options(fn: Callable[..., Any]) -> Callable[..., Any]:
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


@main.command()
@common
@layout_options
@click.option("--reset", is_flag=True, help="Plan a GPU reset where a MIG mode change is pending.")
def plan(desired: MachineLayout, backend: Backend, gpus: list[str] | None, as_json: bool, reset: bool) -> None:
    """What `apply` would do, changing nothing: operations and a picture of each GPU's slices."""
    p = reconcile.plan_apply(desired, backend, gpus=gpus, reset=reset, force=True)
    _show_plan(p, as_json)


def _show_plan(p: reconcile.ApplyPlan, as_json: bool) -> None:
    if as_json:
        return _emit_json(
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


@main.command(name="apply")
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
            progress=None if as_json else _progress_to(status),
        )
    assert res.plan is not None  # apply always returns its plan
    saved = _persist(backend, [(g.gpu.index, g.layout) for g in res.plan.gpus], saved_file) if persist else None
    made = set(res.mig_devices)
    new: list[dict[str, str]] = [
        dict(gpu=str(g.index), profile=d.profile_name, placement=str(d.placement), uuid=d.uuid)
        for g in backend.gpus()
        if g.mig_current and made
        for d in backend.mig_devices(g.index)
        if d.uuid in made
    ]
    if as_json:
        return _emit_json(
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
        t = table("new partitions", [("GPU", "num"), ("profile", "text"), ("placement", "text"), ("MIG UUID", "text")])
        for n in new:
            t.add_row(n["gpu"], n["profile"], n["placement"], n["uuid"])  # whole: for CUDA_VISIBLE_DEVICES
        show(out, t)
    for msg in res.pending_reset:
        out.print(f"[yellow]{msg}[/]: run `migpool apply ... --reset` once nothing uses the GPU, or reboot.")
    if saved:
        out.print(f"saved for `migpool boot`: {saved}", highlight=False)


def _persist(backend: Backend, layouts: list[tuple[int, Layout]], config_file: str | None) -> str:
    """Save these GPUs' layouts (as exact profile counts), keeping what the saved file says of other GPUs."""
    path = persist.config_path(config_file, backend)
    exact = [
        (i, Layout.of({p.name: n for p, n in layout.resolve(backend.model(i))}) if layout.mig_enabled else layout)
        for i, layout in layouts
    ]
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


@main.command()
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
        return _emit_json(dict(state=dirs, gpus=data))
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
                _uuid(dev.uuid),
                f"{dev.memory_used_mib}/{mib(dev.memory_mib)}",
                items([f"{p.name}({p.pid})" for p in ps]),
            )
        whole = [p for p in d["processes"] if p.device_uuid == g.uuid]
        captions = [f"{_uuid(u)} held by {who.describe()}" for u, who in leases.items()]
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


@main.command(name="assert")
@common
@layout_options
def assert_cmd(desired: MachineLayout, backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """Exit 0 if the GPUs match LAYOUT, 1 with the differences if not."""
    diffs = reconcile.diff(desired, backend, gpus=gpus)
    if as_json:
        _emit_json(dict(match=not diffs, differences=diffs))
    elif diffs:
        for d in diffs:
            out.print(d, highlight=False)
    else:
        out.print("[green]match[/]")
    sys.exit(1 if diffs else 0)


@main.command()
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
        progress=None if as_json else (lambda s: out.print(f"  {s}", highlight=False)),
    )
    if as_json:
        return _emit_json(dict(operations=[str(o) for o in res.operations]))
    out.print(
        f"[green]done[/]: {len(res.operations)} operation(s)" if res.operations else "Nothing migpool created is left."
    )


@main.command()
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
        per_gpu = [
            (i, Layout.of({p.name: n for p, n in lay.resolve(backend.model(i))}) if lay.mig_enabled else lay)
            for i, lay in per_gpu
        ]
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
            return _emit_json(
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
            return _emit_json(
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
        click.echo(_k8s_text(seen, cm, name, host), nl=False)
        return None
    if as_json:
        import yaml

        return _emit_json(yaml.safe_load(text))
    click.echo(text, nl=False)


def _k8s_text(seen: Any, configmap: str, name: str, node: str) -> str:
    """`export --k8s` for people: resources and labels per MIG strategy, then mig-manager's ConfigMap."""
    from ..ui import comment

    lines = [
        *comment(
            "Kubernetes, as NVIDIA's device plugin, GPU feature discovery and the GPU operator's mig-manager "
            "define it in their sources (not checked against a running cluster). MIG strategy 'mixed': the node "
            "advertises"
        ),
        *(f"{k}: {n}" for k, n in seen.mixed.items()),
        "# and is labelled",
        *(f"{k}={v}" for k, v in sorted(seen.labels["mixed"].items())),
        *(line for n in seen.notes for line in comment(n)),
    ]
    if seen.single is not None:
        lines += comment(f"MIG strategy 'single' ({seen.single_reason}): the node advertises")
        lines += [f"{k}: {n}" for k, n in seen.single.items()]
    else:
        lines += comment(
            f"MIG strategy 'single' cannot express this layout: {seen.single_reason}; the node would advertise "
            "no GPU and be labelled"
        )
        lines += [f"{k}={v}" for k, v in sorted(seen.labels["single"].items()) if "INVALID" in v or k.endswith("count")]
    lines += [
        *comment(
            "mig-manager applies this layout from the ConfigMap below (the ClusterPolicy's "
            "spec.migManager.config.name names it), selected by"
        ),
        f"#   kubectl label node {node} nvidia.com/mig.config={name} --overwrite",
        "---",
        configmap.rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


@main.command(name="persist")
@common
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Where to save it (default {persist.DEFAULT_CONFIG_FILE}, or ${persist.CONFIG_FILE_ENV}).",
)
def persist_cmd(backend: Backend, gpus: list[str] | None, as_json: bool, config_file: str | None) -> None:
    """Save the current layout of the GPUs for `migpool boot` to apply at every boot."""
    path = _persist(backend, persist.current_layouts(backend, gpus), config_file)
    if as_json:
        return _emit_json(dict(saved_to=path))
    out.print(f"saved for `migpool boot`: {path}", highlight=False)


@main.command()
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
            return _emit_json(
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
        return _emit_json(dict(changed=True, operations=[str(o) for o in res.operations], mig_devices=res.mig_devices))
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


@main.command(name="install-service")
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
        _fail(MigpoolError(f"cannot write {e.filename}: {e.strerror}; run as root, or choose --unit-dir"))
    for path in written:
        click.echo(f"wrote {path}")
    if enable and service.systemctl_available():
        for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", service.UNIT_NAME]):
            if subprocess.run(argv, check=False).returncode != 0:
                _fail(MigpoolError(f"`{' '.join(argv)}` failed; the files are written: run it by hand"))
        click.echo(f"enabled {service.UNIT_NAME}: it runs `migpool boot` at every boot")
    else:
        click.echo(f"enable it with: systemctl daemon-reload && systemctl enable {service.UNIT_NAME}")


@main.command(name="uninstall-service")
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


def _filtered(snap: Any, gpus: list[str] | None, backend: Backend) -> Any:
    if not gpus:
        return snap
    keep = {g.index for g in reconcile.select_gpus(backend, gpus)}
    return dataclasses.replace(snap, gpus=[g for g in snap.gpus if g.index in keep])


def _sampler(backend: Backend, interval: float) -> Any:
    from ..observe.poolstats import running_pools
    from ..observe.telemetry import Sampler

    if not interval > 0:
        raise click.BadParameter(f"must be a positive number of seconds, not {interval}", param_hint="--interval")
    return Sampler(backend, interval, pools=running_pools)


@main.command()
@common
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between samples.")
@click.option("--once", is_flag=True, help="Print one sample and exit (with --json: for scripts).")
def top(backend: Backend, gpus: list[str] | None, as_json: bool, interval: float, once: bool) -> None:
    """Live view: memory, activity (SM, occupancy, tensor, DRAM) and processes per GPU and partition; q quits."""
    from ..observe import top as topview

    with _sampler(backend, interval) as sampler:
        if once or as_json:
            snap = _filtered(sampler.latest(wait=interval + 5), gpus, backend)  # a full window of activity
            if as_json:
                return _emit_json(snap.as_dict())
            out.print(topview.render(snap, bool(click.get_current_context().meta.get("migpool.wide"))))
            return None
        try:
            topview.run(sampler, out, interval, bool(click.get_current_context().meta.get("migpool.wide")))
        except KeyboardInterrupt:
            pass


@main.command()
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
    hostname_label: str,
) -> None:
    """Serve Prometheus metrics until Ctrl-C: dcgm-exporter's default counters, names and labels (its dashboards
    work unchanged), and migpool_* for partitions and pools."""
    import threading

    from ..observe.exporter import serve

    with _sampler(backend, interval) as sampler:
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


@main.group(name="sim")
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
        return _emit_json({"rebooted": backend.spec, "gpu_instances": 0, "mig_modes_kept": True})
    click.echo(f"rebooted the simulated machine {backend.spec}: no GPU instances left, MIG modes kept")


@main.group(name="catalog", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="every model, as JSON")
@click.pass_context
def catalog_cmd(ctx: click.Context, as_json: bool) -> None:
    """The GPU catalog: list models (`migpool catalog`), show one, or check it against a real GPU."""
    if ctx.invoked_subcommand is None:
        if as_json:
            return _emit_json(list(catalog.models()))
        with notes():
            t = table(
                "MIG-capable GPUs in migpool's catalog",
                [("model", "text"), ("memory", "num"), ("SMs", "num"), ("source", "text"), ("profiles", "list")],
            )
            for m in catalog.models():
                catalog.warn_if_estimated(m)
                t.add_row(
                    m.key,
                    mib(m.memory_mib),
                    str(m.sms),
                    m.source + ("~" if m.estimated else ""),
                    items([p.name for p in m.profiles]),
                )
            t.caption = "`migpool catalog show MODEL` for NVML names, profiles and placements; ~: estimated figures"
            show(out, t)


@catalog_cmd.command(name="show")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
def catalog_show(model: str, as_json: bool) -> None:
    """One model's profiles, compute-instance profiles and placements."""
    try:
        m = catalog.lookup(model)
    except MigpoolError as e:
        _fail(e)
    if as_json:
        return _emit_json(m)
    with notes():
        catalog.warn_if_estimated(m)
        t = table(
            f"{m.key}: {', '.join(m.nvml_names)}",
            [
                ("profile", "text"),
                ("id", "num"),
                ("slices", "num"),
                ("memory", "num"),
                ("SMs", "num"),
                ("max", "num"),
                ("placements", "text"),
                ("CIs", "list"),
            ],
            caption="CIs: the compute instances a GPU instance of the profile offers, by compute slices: 1c "
            "is `1c.<profile>`, and the whole GPU instance is the profile itself. source: " + catalog.source_text(m),
        )
        for p in m.profiles:
            t.add_row(
                p.name,
                number(p.id, "id" in m.estimated),
                str(p.slices),
                mib(p.memory_mib, "memory_mib" in m.estimated),
                number(p.sms, "sms" in m.estimated),
                str(p.max_instances),
                format_placements(p.placements),
                items([f"{c.slices}c" for c in p.compute_profiles]),
            )
        show(out, t)


@catalog_cmd.command(name="check")
@common
@click.option(
    "--save", is_flag=True, help="Keep what the GPUs report in your user catalog (it overrides the shipped one)."
)
def catalog_check(backend: Backend, gpus: list[str] | None, as_json: bool, save: bool) -> None:
    """Compare each GPU's profile table, read from the GPU, with the catalog, field for field."""
    from ..mig.hardware import compare_with_catalog

    results = {}
    saved = {}
    for g in reconcile.select_gpus(backend, gpus):
        if g.mig_capable:
            read = backend.model(g.index)
            results[g.index] = compare_with_catalog(read)
            if save and results[g.index]:
                saved[g.index] = str(catalog.save_user_model(read))
    if as_json:
        _emit_json(dict(differences=results, saved=saved) if save else results)
    else:
        for idx, diffs in results.items():
            out.print(
                f"GPU {idx}: " + ("[green]matches the catalog[/]" if not diffs else "[red]differs from the catalog[/]")
            )
            for d in diffs:
                out.print(f"  {d}", highlight=False)
            if idx in saved:
                out.print(
                    f"  saved what GPU {idx} reports to {saved[idx]}; migpool uses it from now on", highlight=False
                )
        if not results:
            out.print("No MIG-capable GPU to check.")
    sys.exit(1 if any(results.values()) and not save else 0)


def _gpu_indices(text: str | None) -> int | list[int] | str:
    if text is None:
        return 0
    if text == "all":
        return "all"
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.UsageError(f"--gpus takes 'all' or GPU indices like 0,1, not {text!r}") from None


@main.command(name="run", context_settings={"allow_interspersed_args": False})
@click.option("-p", "--profile", default=None, help="One partition of this profile per copy, e.g. 1g.10gb.")
@click.option("-n", "count", type=click.IntRange(min=1), default=None, help="How many copies (partitions).")
@click.option(
    "--layout", "layout_text", default=None, help="Mixed partitions, one copy on each: '3g.40gb:1,1g.10gb:4'."
)
@click.option("--whole-gpu", is_flag=True, help="No MIG: one copy per whole GPU.")
@click.option("--dynamic", is_flag=True, help="With --jobs: partitions made and freed for each line's size.")
@click.option(
    "--gpus", "gpu_text", default=None, metavar="all|0,1", help="Which GPUs (default: GPU 0; all for --whole-gpu)."
)
@click.option("--jobs", "jobs_file", default=None, metavar="FILE", help="A queue: one command per line ('-': stdin).")
@click.option("--retries", type=click.IntRange(min=0), default=0, help="Run a failed job line again, up to N times.")
@click.option("--failed", "failed_file", default=None, metavar="FILE", help="Write the lines that failed here.")
@click.option(
    "--restart", type=click.Choice(["never", "on-failure", "always"]), default="never", help="Restart copies."
)
@click.option("--max-restarts", type=click.IntRange(min=0), default=5, help="Most restarts of one copy.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, help="Seconds from SIGTERM to SIGKILL.")
@click.option("--port-base", type=click.IntRange(1, 65535), default=8000, help="{port}: free ports from here up.")
@click.option("--log-dir", default=None, metavar="DIR", help="Also write each copy's output to DIR/NAME.log.")
@click.option("--ready-port", is_flag=True, help="Wait until each copy accepts connections on its {port}; list them.")
@click.option(
    "--ready-cmd", default=None, metavar="CMD", help="Or until CMD (placeholders filled in) exits 0 for each."
)
@click.option("--restore", is_flag=True, help="Put the GPUs back as they were when the run ends.")
@click.option("--simulate", "simulate", metavar="SPEC", default=None, help="Use simulated GPUs, e.g. A100-80GB.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_cmd(
    profile: str | None,
    count: int | None,
    layout_text: str | None,
    whole_gpu: bool,
    dynamic: bool,
    gpu_text: str | None,
    jobs_file: str | None,
    retries: int,
    failed_file: str | None,
    restart: str,
    max_restarts: int,
    grace: float,
    port_base: int,
    log_dir: str | None,
    ready_port: bool,
    ready_cmd: str | None,
    restore: bool,
    simulate: str | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run a program on MIG partitions: N copies, one per partition, or a queue of job lines.

    \b
    migpool run -p 1g.10gb -n 7 -- python serve.py --port {port}
    migpool run --layout 3g.40gb:1,1g.10gb:4 -- ./bench --tag {profile}-{index}
    migpool run -p 3g.40gb -n 2 --jobs sweep.txt
    migpool run --dynamic --jobs jobs.txt   (lines may start with [2g.20gb]
                                              or [min_memory=30GB])
    migpool run --whole-gpu --gpus all -- python train.py

    Each copy gets CUDA_VISIBLE_DEVICES=MIG-<uuid> from the start, MIGPOOL_INDEX, MIGPOOL_PROFILE and
    MIGPOOL_PARTITION, and {index} {uuid} {profile} {gpu} {port} filled in its arguments ({{ for a brace).
    """
    from .. import plugins
    from ..launch import copies as launch
    from ..pool.api.providers import Local, Worker
    from ..pool.compute import Compute

    modes = [
        m
        for m, on in (("-p", profile), ("--layout", layout_text), ("--whole-gpu", whole_gpu), ("--dynamic", dynamic))
        if on
    ]
    if len(modes) != 1:
        raise click.UsageError("give one of -p PROFILE [-n N], --layout P1:N1,P2:N2, --whole-gpu or --dynamic")
    if dynamic and not jobs_file:
        raise click.UsageError("--dynamic runs a queue: give --jobs FILE")
    if bool(command) == bool(jobs_file):
        raise click.UsageError("give a command after -- or --jobs FILE (not both)")
    if count is not None and not (profile or whole_gpu):
        raise click.UsageError("-n goes with -p PROFILE or --whole-gpu")
    gpus = _gpu_indices(gpu_text if gpu_text is not None or not whole_gpu else "all")
    provider = Local(simulate=simulate)
    jobs: list[launch.Job] = []
    if jobs_file:
        text = sys.stdin.read() if jobs_file == "-" else Path(jobs_file).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines()):
            job = launch.parse_job_line(line, number)
            if job is not None:
                job.name = f"job{number + 1}"
                jobs.append(job)
        if not jobs:
            raise click.UsageError(f"{jobs_file}: no command in it (blank lines and # comments are skipped)")
        if not dynamic and any(j.partition or j.min_memory for j in jobs):
            raise click.UsageError("a line's [size] needs --dynamic (or --layout and lines naming its profiles)")
    else:
        launch.check_placeholders(command)
    if ready_port and not any("{port}" in a for a in command):
        raise click.UsageError("--ready-port waits on each copy's {port}: put {port} in the command")
    if ready_cmd:
        launch.check_placeholders(shlex.split(ready_cmd))
    workers: int | None
    if whole_gpu:
        plugin: Any = plugins.gpus(gpus)
        backend = open_backend(provider.spec())
        try:
            found = [g.index for g in backend.gpus()]
        finally:
            backend.close()
        chosen = found if gpus == "all" else [i for i in ([gpus] if isinstance(gpus, int) else gpus) if i in found]
        workers = count or len(chosen) or 1  # one copy per GPU (the plugin names a GPU it lacks)
    elif dynamic:
        plugin = plugins.mig(dynamic=True, gpus=gpus, restore=restore)
        workers = None
    elif layout_text:
        wanted = Layout.of(layout_text)
        plugin = plugins.mig(layout=dict(wanted.counts), gpus=gpus, restore=restore)
        workers = sum(n for _, n in wanted.counts)
    else:
        plugin = plugins.mig(profile=profile, count=count or "all", gpus=gpus, restore=restore)  # -n left out: all fit
        workers = count
    with Compute(provider=provider, worker=Worker(concurrency=workers), plugins=[plugin], progress=False) as pool:
        parts = pool.partitions
        if not jobs:
            if whole_gpu:
                names = [f"gpu#{i}" for i in range(len(pool.worker_pids))]
                profiles: list[str | None] = [None] * len(names)
            else:
                profiles = [p.profile for p in parts]
                names = [f"{p}#{i}" for i, p in enumerate(profiles)]
            ports = launch.free_ports(len(names), port_base) if any("{port}" in a for a in command) else []
            for i, name in enumerate(names):
                jobs.append(
                    launch.Job(
                        i,
                        list(command),
                        name=name,
                        partition=profiles[i] if layout_text else None,
                        port=ports[i] if ports else 0,
                    )
                )
        printer = launch.Printer(sys.stdout, sys.stderr, sys.stdout.isatty() and not as_json, log_dir)
        started = time.monotonic()

        def progress(all_jobs: list[launch.Job]) -> None:
            if jobs_file and sys.stderr.isatty():
                sys.stderr.write(f"migpool run: {launch.progress_line(all_jobs, started)}\n")

        code, jobs = launch.run(
            pool,
            jobs,
            queue_mode=bool(jobs_file),
            parallel=len(pool.worker_pids) if not dynamic else 16,
            printer=printer,
            grace=grace,
            retries=retries,
            restart=restart,
            max_restarts=max_restarts,
            ready_port=ready_port,
            ready_cmd=shlex.split(ready_cmd) if ready_cmd else (),
            on_progress=progress,
        )
    failed = [j for j in jobs if j.status not in (0,)]
    if failed_file and jobs_file:
        Path(failed_file).write_text("".join(j.line + "\n" for j in failed), encoding="utf-8")
    _run_summary(jobs, as_json)
    sys.exit(code)


def _run_summary(jobs: list[Any], as_json: bool) -> None:
    from ..launch.copies import describe_status

    if as_json:
        _emit_json(
            [
                dict(
                    name=j.name,
                    partition=j.where,
                    status=j.status,
                    seconds=round(j.seconds, 3),
                    restarts=j.restarts,
                    attempts=j.attempts,
                    argv=j.argv,
                )
                for j in jobs
            ]
        )
        return
    t = table(None, [("copy", "text"), ("partition", "text"), ("status", "text"), ("time", "num"), ("restarts", "num")])
    for j in jobs:
        t.add_row(j.name, short_uuid(j.where) or "-", describe_status(j.status), f"{j.seconds:.1f}s", str(j.restarts))
    show(err, t)


@main.command()
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
        _fail(e)


if __name__ == "__main__":  # pragma: no cover
    main()
