"""The `migpool` command line: one module per group of verbs, assembled in commands.py."""

from .commands import main

__all__ = ["main"]
