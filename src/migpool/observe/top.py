"""`migpool top`: a live view of every GPU and partition, and of the migpool pools using them (80 columns)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from ..backend.base import Activity
from ..mig.catalog import ProfileName
from ..ui import Kind, short_uuid, table
from .holders import Holder
from .telemetry import GpuSample, Sampler, Snapshot


def _pct(a: Activity | None, field: str) -> str:
    value = getattr(a, field) if a is not None else None
    return "n/a" if value is None else f"{value:.0f}"


def _gpu_view(g: GpuSample, notes: list[str], holders: dict[str, Holder] | None = None) -> list[RenderableType]:
    """The GPU's table of units (its health on the caption line), of processes, and of who holds each partition;
    why readings are missing is added to `notes`, said once under every GPU (two GPUs and their partitions fit
    80x24)."""
    cols: list[tuple[str, Kind]] = [
        ("unit", "text"),
        ("used/total", "num"),
        ("SM%", "num"),
        ("occ%", "num"),
        ("tensor%", "num"),
        ("DRAM%", "num"),
        ("procs", "num"),
    ]
    t = table(f"GPU {g.index}: {g.name}, MIG {g.mig_mode}", cols)
    t.show_edge = False
    units = [
        (
            _unit_name(p.gi_id, p.ci_id, p.profile),
            p.memory_used_mib,
            p.memory_mib,
            p.activity,
            p.activity_note,
            p.processes,
        )
        for p in g.partitions
    ] or [("GPU", g.memory_used_mib, g.memory_mib, g.activity, g.activity_note, g.processes)]
    procs = table(None, [("PID", "num"), ("user", "text"), ("process", "text"), ("memory", "num"), ("on", "text")])
    for unit, used, total, act, note, ps in units:
        t.add_row(
            unit,
            f"{used}/{total} MiB",
            *(_pct(act, f) for f in ("sm_active", "sm_occupancy", "tensor_active", "dram_active")),
            str(len(ps)),
        )
        if act is None and note and f"activity n/a: {note}" not in notes:
            notes.append(f"activity n/a: {note}")
        for p in ps:
            procs.add_row(str(p.pid), p.user, p.name, f"{p.memory_mib} MiB", unit)
    if g.partitions:
        for p in g.processes:
            procs.add_row(str(p.pid), p.user, p.name, f"{p.memory_mib} MiB", "GPU (no partition)")
    held = table(None, [("on", "text"), ("held by", "text")])
    for part in g.partitions:
        who = (holders or {}).get(part.uuid)
        if who is not None:
            held.add_row(_unit_name(part.gi_id, part.ci_id, part.profile), _holder_text(who))
    t.caption = _health_line(g, notes) or None
    procs.show_edge = held.show_edge = False
    return [t, *(x for x in (procs, held) if x.row_count)]


def _holder_text(who: Holder) -> str:
    """'PID 123 of ana: pool train, task step' (or its command), with the Slurm job or pod where known."""
    text = f"PID {who.pid} of {who.user}" if who.pid else "no lease"
    what = ", ".join(x for x in (f"pool {who.pool}" if who.pool else "", f"task {who.task}" if who.task else "") if x)
    text += f": {what or who.command}"
    if who.slurm_job_id:
        text += f", Slurm job {who.slurm_job_id}"
    if who.pod:
        text += f", pod {who.namespace}/{who.pod}"
    return text[:60]


def _unit_name(gi_id: int, ci_id: int, profile: str) -> str:
    """'3:3g.40gb' (GPU instance 3), '5.1:1c.2g.20gb' (its compute instance 1, beside siblings)."""
    parsed = ProfileName.parse(profile)
    return f"{gi_id}:{profile}" if parsed is None or parsed.c == parsed.g else f"{gi_id}.{ci_id}:{profile}"


def _health_line(g: GpuSample, notes: list[str]) -> str:
    """The GPU's temperature, power, clocks and utilization on one line; why any is missing goes to `notes`."""
    h = g.health
    if h is None:
        if g.health_note and f"readings n/a: {g.health_note}" not in notes:
            notes.append(f"readings n/a: {g.health_note}")
        return ""
    parts = []
    if h.gpu_temp is not None:
        parts.append(
            f"{h.gpu_temp:.0f} °C" + (f" (memory {h.memory_temp:.0f} °C)" if h.memory_temp is not None else "")
        )
    if h.power_w is not None:
        parts.append(f"{h.power_w:.0f} W")
    if h.sm_clock_mhz is not None:
        parts.append(f"SM {h.sm_clock_mhz} MHz")
    if h.gpu_util is not None:
        parts.append(f"util {h.gpu_util:.0f}%")
    if g.xid:
        parts.append(f"last XID {g.xid}")
    line = " · ".join(parts)
    missing = dict(h.missing)
    if "gpu_util" in missing and f"util n/a: {missing['gpu_util']}" not in notes:
        notes.append(f"util n/a: {missing['gpu_util']}")
    return line


def _pool_view(pool: dict, wide: bool) -> RenderableType:
    t = table(
        f"pool (pid {pool['pid']}): {pool['pending']} task(s) waiting for a worker",
        [
            ("worker", "num"),
            ("partition", "text"),
            ("profile", "text"),
            ("run", "num"),
            ("queue", "num"),
            ("done", "num"),
            ("fail", "num"),
            ("lost", "num"),
            ("busy s", "num"),
        ],
    )
    errors = []
    for w in pool["workers"]:
        t.add_row(
            str(w["worker"]),
            short_uuid(w["partition"], wide) if w["partition"] else "-",
            w["profile"] or "-",
            str(w["running"]),
            str(w["queued"]),
            str(w["tasks_done"]),
            str(w["tasks_failed"]),
            str(w["tasks_lost"]),
            f"{w['busy_s']:.1f}",
        )
        if w["last_error"]:
            errors.append(f"worker {w['worker']}: {w['last_error']}")
    t.caption = ("last errors: " + "; ".join(errors)) if errors else None
    return t


def render(snap: Snapshot, wide: bool = False, footer: str = "") -> RenderableType:
    parts: list[RenderableType] = [
        Text(
            f"migpool top: {snap.hostname} ({snap.backend}), "
            f"{time.strftime('%H:%M:%S', time.localtime(snap.time))}, "
            f"sampled in {snap.sample_seconds * 1e3:.1f} ms",
            style="bold",
        )
    ]
    notes: list[str] = []
    parts += [view for g in snap.gpus for view in _gpu_view(g, notes, snap.holders)]
    parts += [_pool_view(p, wide) for p in snap.pools]
    if notes:
        parts.append(Text("; ".join(notes), style="dim"))
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)


@contextlib.contextmanager
def _keys() -> Iterator[bool]:
    """cbreak mode on a terminal, so a single 'q' is read without Enter; yields whether keys can be read."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run(sampler: Sampler, console: Console, interval: float, wide: bool = False) -> None:
    """Refresh every `interval` seconds until q (or Ctrl-C). Into a pipe or a file (no terminal to redraw):
    one snapshot per interval, as plain lines, each flushed."""
    if not console.is_terminal:
        while True:
            console.print(render(sampler.latest(), wide, f"every {interval:g} s; Ctrl-C: quit"))
            console.file.flush()
            time.sleep(interval)
    with _keys() as keys, Live(console=console, screen=False, auto_refresh=False) as live:
        while True:
            live.update(render(sampler.latest(), wide, "q: quit" if keys else "Ctrl-C: quit"), refresh=True)
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                if keys and select.select([sys.stdin], [], [], left)[0]:
                    if os.read(sys.stdin.fileno(), 1) in (b"q", b"Q"):
                        return
                elif not keys:
                    time.sleep(left)
