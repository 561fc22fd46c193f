"""`migpool run`: its options and what it prints; launch/jobs.py builds and runs the jobs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import PluginError
from ..mig.layout import Layout
from ..ui import short_uuid, show, table
from .app import emit_json, err, operations_to

if TYPE_CHECKING:
    from ..plugins.sharing import ShortageError


def _gpu_indices(text: str | None) -> int | list[int] | str:
    if text is None:
        return 0
    if text == "all":
        return "all"
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.UsageError(f"--gpus takes 'all' or GPU indices like 0,1, not {text!r}") from None


@click.command(name="run", context_settings={"allow_interspersed_args": False, "show_default": True})
@click.option("-p", "--profile", default=None, help="One partition of this profile per copy, e.g. 1g.10gb.")
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="How many copies (default: all fit).",
)
@click.option(
    "--layout", "layout_text", default=None, help="Mixed partitions, one copy on each: '3g.40gb:1,1g.10gb:4'."
)
@click.option("--whole-gpu", is_flag=True, help="No MIG: one copy per whole GPU.")
@click.option(
    "--exclusive",
    is_flag=True,
    help="Repartition the whole GPUs for the run (default: reuse idle partitions, leave the others as they are).",
)
@click.option("--dynamic", is_flag=True, help="With --jobs: partitions made and freed for each line's size.")
@click.option("--gpus", "gpu_text", default=None, metavar="all|0,1", help="Which GPUs (default 0; --whole-gpu: all).")
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
@click.option(
    "--restore", is_flag=True, help="At the end, remove the partitions it made (--exclusive: the GPUs as they were)."
)
@click.option("--simulate", "simulate", metavar="SPEC", default=None, help="Use simulated GPUs, e.g. A100-80GB.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run_cmd(
    profile: str | None,
    count: int | None,
    layout_text: str | None,
    whole_gpu: bool,
    exclusive: bool,
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
    options = dict(locals())
    from ..launch import stopping

    # Ctrl-C, SIGTERM or SIGHUP at any moment from here: every copy stops, the pool closes, the status is 128 + it
    with stopping.Stop() as stop:
        try:
            code, jobs = _run(stop, **options)
        except KeyboardInterrupt:  # (stopping.Stopped too) before the copies started: the set-up was undone
            code, jobs = stop.status() or 130, []
            stopping.write(sys.stderr, "migpool run: stopped before its copies started\n")
        if failed_file and jobs_file and jobs:
            failed = [j for j in jobs if j.status not in (0,)]
            Path(failed_file).write_text("".join(j.line + "\n" for j in failed), encoding="utf-8")
        if jobs:
            try:
                _run_summary(jobs, as_json)
            except (OSError, ValueError) as e:
                if not stopping.closed(e):
                    raise
            except SystemExit:  # rich's answer to a broken pipe (its reader went away): the status stays the run's
                pass
        stopping.quiet_closed_output()
    sys.exit(code)


def _run(
    stop: Any,
    *,
    profile: str | None,
    count: int | None,
    layout_text: str | None,
    whole_gpu: bool,
    exclusive: bool,
    dynamic: bool,
    gpu_text: str | None,
    jobs_file: str | None,
    retries: int,
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
    **_: Any,
) -> tuple[int, list[Any]]:
    """`migpool run`'s options checked, its pool opened and its jobs run: the exit status and the jobs."""
    from .. import plugins
    from ..launch import copies as launch
    from ..launch import jobs as launching
    from ..plugins.sharing import ShortageError
    from ..pool.api.providers import Local

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
    if exclusive and not (profile or layout_text):
        raise click.UsageError("--exclusive goes with -p PROFILE or --layout (partitions the run makes)")
    gpus = _gpu_indices(gpu_text if gpu_text is not None or not whole_gpu else "all")
    provider = Local(simulate=simulate)
    jobs: list[launch.Command] = []
    if jobs_file:
        text = sys.stdin.read() if jobs_file == "-" else Path(jobs_file).read_text(encoding="utf-8", errors="replace")
        jobs = launching.read_job_file(text)
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
        # one copy per GPU the machine has (the plugin names a GPU it lacks)
        workers = count or len(launching.whole_gpus(provider, gpus)) or 1
    elif dynamic:
        plugin = plugins.mig(dynamic=True, gpus=gpus, restore=restore)
        workers = None
    elif layout_text:
        wanted = Layout.of(layout_text)
        plugin = plugins.mig(
            layout=dict(wanted.counts), gpus=gpus, restore=restore, exclusive=exclusive, progress=operations_to(err)
        )
        workers = sum(n for _, n in wanted.counts)
    else:  # -n left out: as many as the GPUs hold
        plugin = plugins.mig(
            profile=profile,
            count=count or "all",
            gpus=gpus,
            restore=restore,
            exclusive=exclusive,
            progress=operations_to(err),
        )
        workers = None
    how = launching.How(
        whole_gpu=whole_gpu,
        pinned=bool(layout_text),
        parallel=16 if dynamic else None,
        grace=grace,
        retries=retries,
        restart=restart,
        max_restarts=max_restarts,
        ready_port=ready_port,
        ready_cmd=tuple(shlex.split(ready_cmd)) if ready_cmd else (),
        port_base=port_base,
        color=sys.stdout.isatty() and not as_json,
        log_dir=log_dir,
    )

    def progress(line: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"migpool run: {line}\n")

    try:
        return launching.run_on_pool(
            provider, plugin, workers, jobs, command, how, sys.stdout, sys.stderr, progress, stop=stop
        )
    except ShortageError as e:  # said in the command's own words (-n, --gpus, --exclusive), not the plugin's
        raise PluginError(shortage(e, count, exclusive, gpu_text == "all")) from None


def shortage(e: ShortageError, count: int | None, exclusive: bool, all_gpus: bool) -> str:
    """The refusal of `-p PROFILE [-n N]` when the GPUs hold fewer partitions of it: what they hold, and the ways
    to more (fewer copies, the whole GPU, every GPU)."""
    gpus = sorted(e.capacity)
    have = sum(e.capacity.values())
    where = f"GPU {gpus[0]} holds" if len(gpus) == 1 else f"GPUs {', '.join(map(str, gpus))} hold"
    beside = "" if exclusive or e.whole == have else " beside the partitions kept there"
    ways = [f"-n {have}"] if have and count is not None else []
    if not exclusive and e.whole > have:
        ways.append(f"--exclusive ({e.whole} on the emptied GPU{'s' if len(gpus) > 1 else ''})")
    if not all_gpus and e.everywhere and e.everywhere > have:
        ways.append(f"--gpus all ({e.everywhere} on every GPU)")
    asked = f"-n {count}: " if count is not None else ""
    most = f"at most {have}" if have else "no"
    text = f"{asked}{where} {most} partition{'' if have == 1 else 's'} of {e.profile}{beside}."
    if ways:
        text += " Use " + (", ".join(ways[:-1]) + " or " if len(ways) > 1 else "") + ways[-1] + "."
    return text


def _run_summary(jobs: list[Any], as_json: bool) -> None:
    from ..launch.copies import describe_status

    if as_json:
        emit_json(
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
