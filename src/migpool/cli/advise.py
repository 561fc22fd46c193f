"""`migpool advise`: the static layout per GPU for the work this machine ran (the workload record), or for a
trace, with what it and the other choices are expected to give."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import click

from ..advise import futures
from ..advise.answer import Advice, advise
from ..advise.model import WHOLE, Combo
from ..advise.trace import jobs_from_records
from ..backend import SIMULATE_ENV, open_backend
from ..errors import MigpoolError
from ..mig import catalog
from ..mig.catalog import GpuModel
from ..mig.planner import plan
from ..observe import workload
from .app import emit_json, err, estimated, fail, out

COLUMNS = 80
PER_SLICE = 9  # picture columns per compute slice


def _seconds(s: float) -> str:
    if math.isinf(s):
        return "never"
    return f"{s:,.0f} s" if s >= 10 else f"{s:.1f} s"


def picture(gpu: GpuModel, layout: tuple[str, ...]) -> str:
    """The slices of one GPU as a bar: each partition a box as wide as its compute slices, where the planner
    places it."""
    if layout == (WHOLE,):
        return "[" + "whole GPU (no MIG)".center(gpu.compute_slices * PER_SLICE - 2) + "]"
    cells = [" " * PER_SLICE] * gpu.compute_slices
    text = ""
    placed = sorted(plan(gpu, {n: layout.count(n) for n in set(layout)}), key=lambda p: p.start)
    at = 0
    for p in placed:
        slices = min(p.profile.slices, gpu.compute_slices - p.start)
        text += " " * (PER_SLICE * (p.start - at))
        text += "[" + p.profile.name.center(PER_SLICE * slices - 2) + "]"
        at = p.start + slices
    return text + "".join(cells[at:])


def show(a: Advice, gpu: GpuModel) -> None:
    est = f" ({a.estimated} with a size never measured: estimated)" if a.estimated else ""
    out.print(textwrap.fill(f"{a.gpus} x {a.model}, {a.tasks} tasks{est}", COLUMNS), highlight=False, soft_wrap=True)
    how = "every combination" if a.exhaustive else "grown one GPU at a time"
    on = f"all {a.tasks}" if a.searched == a.tasks else f"the latest {a.searched}"
    text = f"layouts searched: {how}, scored on {futures.COUNT} futures drawn from {on} tasks"
    out.print(textwrap.fill(text, COLUMNS), highlight=False, soft_wrap=True)
    out.print(f"\n  {'choice':<12} {'mean JCT':>12} {'p95 JCT':>12} {'makespan':>12}", highlight=False)
    for r in a.rows:
        e = r.expected
        line = f"  {r.name:<12} {_seconds(e.mean_jct):>12} {_seconds(e.p95_jct):>12} {_seconds(e.makespan):>12}"
        out.print(line, highlight=False)
    if not any(r.name == "dynamic MIG" for r in a.rows):
        out.print("  dynamic MIG  not replayed (--dynamic: minutes for a few hundred tasks)", highlight=False)
    out.print()
    for k, lay in enumerate(a.best.layouts):
        out.print(f"GPU {k}  {picture(gpu, lay)}", highlight=False)
    out.print("\nto make it:", highlight=False)
    for line in a.apply:  # a long one goes on over lines that end in a backslash, as a shell reads it
        parts = textwrap.wrap(line, COLUMNS - 4, break_on_hyphens=False, break_long_words=False)
        out.print("  " + " \\\n      ".join(parts), highlight=False, soft_wrap=True)
    if a.target:
        t = a.target
        mig = "more than 64" if t["mig"] is None else t["mig"]
        whole = "more than 64" if t["whole"] is None else t["whole"]
        text = f"mean JCT {_seconds(float(t['jct'] or 0))}: {mig} GPU(s) with advised layouts, {whole} whole GPU(s)"
        out.print("\n" + textwrap.fill(text, COLUMNS), highlight=False, soft_wrap=True)


def _this_machine(simulate: str | None, only: tuple[str, ...]) -> tuple[GpuModel, int, Combo]:
    """This machine's GPU model, its number of GPUs (those of `only`, if given) and their layouts now."""
    try:
        backend = open_backend(simulate)
    except MigpoolError as e:
        fail(f"{e} (or advise for GPUs elsewhere: --model A100-80GB --gpus 8)")
    try:
        found = [g.index for g in backend.gpus() if not only or str(g.index) in only]
        if not found:
            raise click.UsageError("no GPU of this machine to advise for: give --model and --gpus")
        lays = []
        for i in found:
            devices = backend.mig_devices(i)
            lays.append(tuple(sorted(d.profile_name for d in devices)) if devices else (WHOLE,))
        return estimated(backend, found[0]), len(found), tuple(lays)
    finally:
        backend.close()


@click.command(name="advise")
@click.option("--trace", "trace_file", type=click.Path(exists=True, dir_okay=False), help="A trace (JSON lines).")
@click.option("--model", "model_name", help="With --gpus: the GPU model to advise for (e.g. A100-80GB).")
@click.option("--gpus", "count", type=int, help="Advise for this many GPUs of --model, not this machine's.")
@click.option("--target-jct", type=float, help="Also: how many GPUs reach this mean JCT (seconds).")
@click.option("--simulate", metavar="SPEC", help=f"Use simulated GPUs, e.g. A100-80GB:2 (also ${SIMULATE_ENV}).")
@click.option("--gpu", "only", multiple=True, metavar="INDEX", help="Only these GPUs of this machine (repeatable).")
@click.option("--dynamic", is_flag=True, help="Also replay dynamic MIG's policy (minutes for a few hundred tasks).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def advise_cmd(
    trace_file: str | None,
    model_name: str | None,
    count: int | None,
    target_jct: float | None,
    simulate: str | None,
    only: tuple[str, ...],
    dynamic: bool,
    as_json: bool,
) -> None:
    """The best MIG layout per GPU for the recorded work (or --trace), against whole GPUs and the current one."""
    if (model_name is None) != (count is None):
        raise click.UsageError("give --model and --gpus together (e.g. --model A100-80GB --gpus 8), or neither")
    current = None
    if model_name is not None and count is not None:
        if count < 1:
            raise click.UsageError(f"--gpus must be at least 1, got {count}")
        gpu = catalog.lookup(model_name)
        n = count
    else:
        gpu, n, current = _this_machine(simulate, only)
    files = [Path(trace_file)] if trace_file else workload.paths()
    if not files:
        raise click.UsageError(
            f"no workload record at {workload.default_path()}: run tasks on a pool first "
            f"(with ${workload.RECORD_ENV} unset), or give --trace FILE"
        )
    bad: list[str] = []
    jobs = jobs_from_records(workload.read(files, bad.append), gpu)
    if bad:
        err.print(f"note: skipped {len(bad)} line(s) that are not records, first {bad[0]}", highlight=False)
    if not jobs:
        raise click.UsageError(f"no task in {', '.join(map(str, files))} ran on a size {gpu.name} has")
    answer = advise(jobs, gpu, n, current=current, target_jct=target_jct, dynamic=dynamic)
    if as_json:
        emit_json(_as_json(answer))
        return
    show(answer, gpu)


def _as_json(a: Advice) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if math.isinf(x) else round(x, 3)

    return dict(
        model=a.model,
        gpus=a.gpus,
        tasks=a.tasks,
        estimated_tasks=a.estimated,
        searched_tasks=a.searched,
        exhaustive=a.exhaustive,
        advised=[list(lay) for lay in a.best.layouts],
        choices={
            r.name: dict(
                layouts=[list(lay) for lay in r.layouts],
                mean_jct=num(r.expected.mean_jct),
                p95_jct=num(r.expected.p95_jct),
                makespan=num(r.expected.makespan),
            )
            for r in a.rows
        },
        apply=list(a.apply),
        target=a.target or None,
    )
