"""`python -m migpool`: the command line. From its first line a Ctrl-C gives the status Ctrl-C gives (130)."""

import contextlib

try:
    from .interrupts import install

    install()  # (first: see interrupts.py for why a Ctrl-C must not be a plain KeyboardInterrupt)
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:  # `ps` and `top` say migpool (Linux)
        comm.write("migpool")
    from .cli import main
except KeyboardInterrupt:
    raise SystemExit(130) from None

main()
