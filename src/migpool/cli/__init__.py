"""The `migpool` command line: one module per group of verbs, assembled in commands.py."""

from .. import interrupts

interrupts.install()  # (the `migpool` script's first line; `python -m migpool` did it already)
try:
    from .commands import main
except BaseException as e:  # Ctrl-C while the command line loads: nothing has started; the status Ctrl-C gives
    code = interrupts.status(e)
    if code is None:
        raise
    raise SystemExit(code) from None

__all__ = ["main"]
