"""Task functions for the plugin tests: a light module (the standard library only), as user code usually is, so
that a worker's first call does not pay for importing a test module."""

import os
import time


def nap(x, seconds):
    time.sleep(seconds)
    return x * 2, os.getpid()


def fail(x):
    raise ValueError(f"bad {x}")


def pid_score(estimator, X, y):
    return float(os.getpid())


def environment(names):
    return {n: os.environ.get(n) for n in names}
