"""The `migpool` command line: one module per group of verbs, assembled in commands.py."""

try:
    from .commands import main
except KeyboardInterrupt:  # Ctrl-C while the command line loads: nothing has started; the status Ctrl-C gives
    raise SystemExit(130) from None

__all__ = ["main"]
