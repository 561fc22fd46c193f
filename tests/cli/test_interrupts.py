"""Failure 15's last window: a Ctrl-C in the first tenth of a second of `migpool run` ended it with status -2 and
no message (about 1 in 25 under load). CPython remembers a plain KeyboardInterrupt that escaped an exec of source
text (dataclasses build their methods so, at import) and may kill the process with SIGINT at exit, over the 130
the program chose; tests/launch/test_run_containment.py sends Ctrl-C at those moments."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from migpool import interrupts
from migpool.launch.stopping import Stopped

RAISES = """
import os, signal
import migpool.cli  # the command line's first lines
try:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10**7): pass
except KeyboardInterrupt as e:
    print(type(e).__name__)
"""


def test_the_command_line_raises_an_interrupt_python_does_not_remember():
    done = subprocess.run([sys.executable, "-c", RAISES], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == interrupts.Interrupted.__name__  # a subclass: see interrupts.py


def test_an_ignored_sigint_stays_ignored():
    code = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import migpool.cli; print(signal.getsignal(2))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == str(signal.SIG_IGN)


class _Interrupting:
    def __set_name__(self, owner: type, name: str) -> None:
        raise interrupts.Interrupted


def test_status_sees_an_interrupt_python_wrapped():
    with pytest.raises(BaseException) as info:  # Python 3.11 wraps it in a RuntimeError; 3.12 does not

        class Built:
            field = _Interrupting()

    assert interrupts.status(info.value) == 130


def test_status_names_the_signal_and_nothing_else():
    try:
        raise ValueError("x") from Stopped(signal.SIGTERM)
    except ValueError as e:
        assert interrupts.status(e) == 128 + signal.SIGTERM
    assert interrupts.status(ValueError("no interrupt")) is None
