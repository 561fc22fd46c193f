"""migpool.pool.wire.remote_errors and .tracebacks: a task's exception; regressions that once broke migpool."""

from __future__ import annotations

import pytest

import migpool
from migpool import Compute, Worker


class NeedsArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")
        self.a, self.b = a, b


class HoldsALock(Exception):
    def __init__(self, msg):
        super().__init__(msg)
        import threading

        self.lock = threading.Lock()  # cannot be pickled
        self.count = 3


def _raise(kind):
    import sys

    if kind == "needs-args":
        raise NeedsArgs(1, 2)
    if kind == "holds-a-lock":
        raise HoldsALock("locked")
    if kind == "exit":
        sys.exit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "deep":
        sys.setrecursionlimit(500_000)

        def down(n):
            return down(n - 1) if n else 1 / 0

        down(100_000)


def test_an_exception_that_pickling_cannot_rebuild_comes_back_as_its_own_class():
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as pool:
        with pytest.raises(NeedsArgs) as got:
            pool.submit(_raise, "needs-args").result(timeout=30)
        assert isinstance(got.value, migpool.RemoteError)
        assert str(got.value) == "1 and 2" and (got.value.a, got.value.b) == (1, 2)
        assert "in _raise" in str(got.value.__cause__)  # the worker's traceback
        with pytest.raises(HoldsALock, match="locked") as got2:
            pool.submit(_raise, "holds-a-lock").result(timeout=30)
        assert got2.value.count == 3 and not hasattr(got2.value, "lock")


@pytest.mark.parametrize(("kind", "text"), [("exit", r"sys.exit\(3\)"), ("interrupt", "KeyboardInterrupt")])
def test_sys_exit_or_ctrl_c_in_a_task_fails_the_task_not_the_caller(kind, text):
    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as pool:
        with pytest.raises(migpool.TaskExitError, match=text) as got:
            pool.submit(_raise, kind).result(timeout=30)
        assert kind != "exit" or got.value.code == 3
        assert pool.submit(lambda: "goes on").result(timeout=30) == "goes on"


def test_a_deep_recursions_traceback_is_bounded():
    import time

    with Compute(worker=Worker(concurrency=1, executor="process"), progress=False) as pool:
        t0 = time.monotonic()
        with pytest.raises(ZeroDivisionError) as got:
            pool.submit(_raise, "deep").result(timeout=60)
        took = time.monotonic() - t0
    tb = str(got.value.__cause__)
    assert "frames omitted" in tb and tb.count("in down") <= 100
    assert took < 20
