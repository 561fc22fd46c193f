"""What every `migpool` command shares: the consoles, the options every GPU command takes (`common`), one
`error:` line and exit 2 for a migpool error or a usage error (`Main`, `fail`), JSON output and estimate notes."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from rich.console import Console

from .. import interrupts
from ..backend import SIMULATE_ENV, Backend, open_backend
from ..errors import EstimateWarning, MigpoolError
from ..mig import catalog
from ..mig.catalog import GpuModel
from ..ui import short_uuid

out = Console()
err = Console(stderr=True)


def jsonable(x: Any) -> Any:
    """Dataclasses, tuples and dicts as plain JSON values (keys as text)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    return x


def emit_json(data: Any) -> None:
    """Print `data` as indented JSON for scripts."""
    click.echo(json.dumps(jsonable(data), indent=2, default=str))


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
                fail(e)
            try:
                click.get_current_context().meta["migpool.wide"] = wide
                return fn(backend=backend, gpus=list(gpus) or None, as_json=as_json, **kw)
            except MigpoolError as e:
                fail(e)
            finally:
                backend.close()

    return wrapper


def fail(e: BaseException | str, code: int = 2) -> NoReturn:
    """Print one `error:` line on stderr and exit with `code`."""
    err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def operations_to(console: Console, status: Any = None) -> Callable[[str], None]:
    """How `apply`, `run` and the others print the operations that change GPUs, as each is done: one indented
    line each (and the spinner's text, given `status`)."""

    def say(text: str) -> None:
        if status is not None:
            status.update(text)
        console.print(f"  {text}", highlight=False)

    return say


def shown_uuid(uuid: str) -> str:
    """A UUID as tables show it: shortened unless --wide."""
    return short_uuid(uuid, bool(click.get_current_context().meta.get("migpool.wide")))


def estimated(backend: Backend, index: int) -> GpuModel:
    """The GPU's model, noting (once, on stderr) when its memory figures are estimates."""
    model = backend.model(index)
    catalog.warn_if_estimated(model)
    return model


class Main(click.Group):
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
            fail(f"{e.format_message()}{where}")
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except click.exceptions.Abort as e:
            code = interrupts.status(e)
            if code is not None:  # Ctrl-C: click wrote the line that ends ^C
                sys.exit(code)
            fail("aborted", 1)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except Exception as e:  # an interrupt Python wrapped (a class's __set_name__ wraps it in a RuntimeError)
            code = interrupts.status(e)
            if code is None:
                raise
            sys.exit(code)
        sys.exit(0)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command with its whole first sentence, wrapped (click cuts it at the terminal's width with
        '...')."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MigpoolError as e:
            fail(e)
