"""Who owns what: every pool thread is named, kept and joined; a thread that dies of an error breaks the pool
loudly; the plugin chain is one path with rollback; dynamic MIG starts only when asked."""

from __future__ import annotations

import threading
import time

import pool_tasks as T
import pytest

import migpool
from migpool import plugins
from migpool.pool.api.providers import Local, Node, Worker
from migpool.pool.scheduler.core import Slot
from migpool.pool.scheduler.threads import Spawner, Threads
from migpool.pool.worker import chain


def test_threads_are_named_kept_and_joined_and_their_errors_reach_the_owner():
    errors = []
    threads = Threads(on_error=lambda name, e: errors.append((name, type(e).__name__)))
    gate = threading.Event()
    threads.start("migpool-test-wait", gate.wait)
    threads.start("migpool-test-boom", lambda: 1 / 0)
    assert threads.join(0.2) == ["migpool-test-wait"]  # still running: named in the answer
    gate.set()
    assert threads.join(5) == []
    assert errors == [("migpool-test-boom", "ZeroDivisionError")]


def test_the_spawner_runs_calls_on_its_own_thread_even_from_itself():
    threads = Threads()
    spawner = Spawner("migpool-test-spawn", threads)
    assert spawner.call(lambda: threading.current_thread().name) == "migpool-test-spawn"
    # a call made from the spawning thread runs at once (a restart that starts a process)
    assert spawner.call(lambda: spawner.call(lambda: 7)) == 7
    spawner.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        spawner.post(lambda: None)
    assert threads.join(5) == []


def test_a_pool_thread_that_dies_breaks_the_pool_loudly(monkeypatch):
    real = Slot.resolve

    def broken(self, msg, peer=0):
        if getattr(msg, "tid", None) == 0:
            raise RuntimeError("reader bug")
        return real(self, msg, peer)

    monkeypatch.setattr(Slot, "resolve", broken)
    c = migpool.Compute(
        provider=Local(simulate="A100-80GB"), worker=Worker(concurrency=1, executor="process"), progress=False
    )
    c.open()
    try:
        first = c.submit(T.add(1))
        with pytest.raises(migpool.PoolBrokenError, match="migpool-w0-reader died: RuntimeError: reader bug"):
            first.result(timeout=30)
        with pytest.raises(migpool.PoolBrokenError):  # the next call says so too
            c.submit(T.add(2))
    finally:
        with pytest.raises(migpool.PoolBrokenError):  # and so does close()
            c.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("migpool-w0")]  # joined


def test_closing_a_pool_joins_every_thread_it_started():
    before = {t.ident for t in threading.enumerate()}
    with migpool.Compute(
        provider=Local(simulate="A100-80GB"), worker=Worker(concurrency=2, executor="process"), progress=False
    ) as c:
        assert [T.add(i) >> c for i in range(3)] == [T.add.local(i) for i in range(3)]
        names = {t.name for t in threading.enumerate() if t.ident not in before}
        assert {"migpool-spawn", "migpool-w0-reader", "migpool-w1-writer", "migpool-w1-stderr"} <= names
    time.sleep(0.05)
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("migpool-w")]
    assert left == []


class Recorder(plugins.Plugin):
    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def validate(self, node):
        self.log.append(f"{self.name}.validate")

    def bootstrap(self, node):
        self.log.append(f"{self.name}.bootstrap")
        if self.fail:
            raise migpool.PluginError(f"{self.name} cannot")

    def teardown(self, node):
        self.log.append(f"{self.name}.teardown")

    def rollback(self, node):
        self.log.append(f"{self.name}.rollback")


def test_the_chain_validates_all_then_bootstraps_and_rolls_back_on_a_failure():
    log: list[str] = []
    chain_ = [Recorder(log, "a"), Recorder(log, "b"), Recorder(log, "c", fail=True), Recorder(log, "d")]
    with pytest.raises(migpool.PluginError, match="c cannot"):
        chain.prepare(chain_, Node(0, 1, Local(simulate="A100-80GB"), Worker()))
    assert log == [*(f"{n}.validate" for n in "abcd"), "a.bootstrap", "b.bootstrap", "c.bootstrap"] + [
        "b.rollback",
        "a.rollback",
    ]


def test_a_local_pool_whose_bootstrap_fails_rolls_back_as_a_ray_pool_does():
    log: list[str] = []
    pool = migpool.Compute(
        provider=Local(simulate="A100-80GB"),
        worker=Worker(concurrency=1, executor="process"),
        plugins=[Recorder(log, "a"), Recorder(log, "b", fail=True)],
        progress=False,
    )
    with pytest.raises(migpool.PluginError, match="b cannot"):
        with pool:
            pass
    assert log == ["a.validate", "b.validate", "a.bootstrap", "b.bootstrap", "a.rollback"]  # no teardown


def test_dynamic_mig_starts_only_when_asked():
    from migpool.pool.dynamic.controller import DynamicMig
    from migpool.pool.dynamic.site import LocalSite
    from migpool.pool.scheduler.core import Scheduler

    node = Node(0, 1, Local(simulate="A100-80GB"), Worker())
    sched = Scheduler([])
    try:
        d = DynamicMig(sched, LocalSite(node, [0], lambda part: None), keep_idle=1.0)
        assert sched.provisioner is None and not [t for t in threading.enumerate() if t.name == "migpool-dynamic"]
        d.start()
        assert sched.provisioner is d and any(t.name == "migpool-dynamic" for t in threading.enumerate())
        d.stop()
        assert not [t for t in threading.enumerate() if t.name == "migpool-dynamic"]
    finally:
        sched.shutdown(kill=True)
        node.close()
