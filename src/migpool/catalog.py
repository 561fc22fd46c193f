"""The GPU catalog, at its stable import path (`migpool.catalog`): it lives in `migpool.mig.catalog`."""

from .mig.catalog import *  # noqa: F403
from .mig.catalog import __all__ as __all__
