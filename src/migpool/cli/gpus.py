"""`migpool gpus`, `profiles` and `catalog` (list, show, check): the GPUs, their MIG profiles and the catalog."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..backend import Backend
from ..errors import MigpoolError
from ..mig import catalog
from ..mig.catalog import format_placements
from ..mig.planner import PlannedInstance, max_addable
from ..reconcile import core as reconcile
from ..ui import items, mib, number, show, table
from .app import common, emit_json, estimated, fail, notes, out, shown_uuid


@click.command()
@common
def gpus(backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """List GPUs: name, memory, MIG mode (N/A: not MIG-capable), UUID."""
    rows = reconcile.select_gpus(backend, gpus)
    if as_json:
        return emit_json(rows)
    t = table(
        f"GPUs ({backend.kind})",
        [("#", "num"), ("name", "list"), ("memory", "num"), ("MIG mode", "text"), ("UUID", "text")],
    )
    pending = False
    for g in rows:
        mode = g.mig_mode_short
        pending = pending or "→" in mode
        t.add_row(str(g.index), g.name, mib(g.memory_mib), mode, shown_uuid(g.uuid))
    if pending:
        t.caption = "A→B: MIG mode A now, B once the GPU is reset (`migpool apply LAYOUT --reset`)."
    show(out, t)


def _instances(backend: Backend, gpu: int) -> list[PlannedInstance]:
    return [a.instance for a in reconcile.actual_instances(backend, gpu)] if backend.gpu(gpu).mig_current else []


@click.command()
@common
def profiles(backend: Backend, gpus: list[str] | None, as_json: bool) -> None:
    """The MIG profile table of each GPU, read from the GPU (like `nvidia-smi mig -lgip -lgipp`)."""
    data: list[dict[str, Any]] = []
    for g in reconcile.select_gpus(backend, gpus):
        if not g.mig_capable:
            data.append(dict(gpu=g.index, name=g.name, profiles=[]))
            continue
        model = estimated(backend, g.index)
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
        return emit_json(data)
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


@click.group(name="catalog", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="every model, as JSON")
@click.pass_context
def catalog_cmd(ctx: click.Context, as_json: bool) -> None:
    """The GPU catalog: list models (`migpool catalog`), show one, or check it against a real GPU."""
    if ctx.invoked_subcommand is None:
        if as_json:
            return emit_json(list(catalog.models()))
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
        fail(e)
    if as_json:
        return emit_json(m)
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
        emit_json(dict(differences=results, saved=saved) if save else results)
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
