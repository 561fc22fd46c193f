"""Sizes for tasks that ask for memory: ranked from measured run times (pool/sizing.py), and used by dynamic MIG."""

import time

import pool_tasks as T
from hypothesis import given
from hypothesis import strategies as st

import migpool
from migpool import Compute, Worker, gather, plugins
from migpool.mig import catalog
from migpool.pool.dynamic.sizing import TIE, RunTimes

A100 = catalog.lookup("A100-80GB")
CANDS = [p for p in A100.profiles if not p.name.endswith("+me") and p.memory_mib >= 9000]


def test_nothing_measured_tries_the_smallest_and_the_next_size():
    c = RunTimes().choose((1, 9000), CANDS)
    assert c.ranked[0].name == "1g.10gb" and c.explore.name == "2g.20gb"


def test_a_size_that_runs_faster_in_proportion_is_preferred_and_the_next_is_tried():
    r = RunTimes()
    r.add((1, 9000), "1g.10gb", 0.4)
    r.add((1, 9000), "2g.20gb", 0.2)  # same slice-seconds, faster
    c = r.choose((1, 9000), CANDS)
    assert [p.name for p in c.ranked[:2]] == ["2g.20gb", "1g.10gb"] and c.explore.name == "3g.40gb"
    r.add((1, 9000), "3g.40gb", 0.2)  # no faster on 3 slices: worse per slice, and nothing larger is tried
    c = r.choose((1, 9000), CANDS)
    assert [p.name for p in c.ranked[:3]] == ["2g.20gb", "1g.10gb", "3g.40gb"] and c.explore is None


def test_a_task_that_does_not_scale_stays_small():
    r = RunTimes()
    r.add((1, 9000), "1g.10gb", 0.3)
    r.add((1, 9000), "2g.20gb", 0.3)
    c = r.choose((1, 9000), CANDS)
    assert c.ranked[0].name == "1g.10gb" and c.explore is None


def test_a_first_run_counts_at_once_when_it_makes_its_size_look_good():
    r = RunTimes()
    r.add((1, 9000), "1g.10gb", 0.4)
    r.add((1, 9000), "2g.20gb", 0.21, first=True)  # already as fast per slice on the 2g's first run
    c = r.choose((1, 9000), CANDS)
    assert [p.name for p in c.ranked[:2]] == ["2g.20gb", "1g.10gb"] and c.explore.name == "3g.40gb"
    assert r.measured((1, 9000)) == {"1g.10gb": 0.4} and r.bounds((1, 9000)) == {"2g.20gb": 0.21}
    r.add((1, 9000), "2g.20gb", 0.3, first=True)  # another worker's first run: the fastest one is the bound
    assert r.bounds((1, 9000)) == {"2g.20gb": 0.21}
    r.add((1, 9000), "2g.20gb", 0.39)  # a later run: the measured figure replaces the bound, and ranks
    assert r.bounds((1, 9000)) == {} and r.choose((1, 9000), CANDS).ranked[0].name == "1g.10gb"


def test_a_slow_first_run_never_makes_its_size_look_bad():
    r = RunTimes()
    r.add((1, 9000), "1g.10gb", 0.4)
    r.add((1, 9000), "2g.20gb", 3.0, first=True)  # paid for loading: says nothing against the 2g
    c = r.choose((1, 9000), CANDS)
    assert c.ranked[0].name == "1g.10gb" and c.explore.name == "2g.20gb"  # the 2g is still to be tried
    only_first = RunTimes()
    only_first.add((1, 9000), "1g.10gb", 4.0, first=True)
    only_first.add((1, 9000), "2g.20gb", 0.2, first=True)
    assert only_first.choose((1, 9000), CANDS).ranked[0].name == "2g.20gb"


@given(
    st.dictionaries(st.sampled_from([p.name for p in CANDS]), st.floats(0.001, 100.0)),
    st.dictionaries(st.sampled_from([p.name for p in CANDS]), st.floats(0.001, 100.0)),
)
def test_ranking_properties_with_first_runs(means, firsts):
    r = RunTimes()
    for name, t in firsts.items():
        r.add((7, 9000), name, t, first=True)
    for name, t in means.items():
        r.add((7, 9000), name, t)
    c = r.choose((7, 9000), CANDS)
    slices = {p.name: p.slices for p in CANDS}
    bound = {n: t for n, t in firsts.items() if n not in means}
    cost = {n: t * slices[n] for n, t in {**bound, **means}.items()}
    names = [p.name for p in c.ranked]
    assert len(set(names)) == len(names) and set(names) | ({c.explore.name} if c.explore else set()) == set(slices)
    if cost:  # the first is (nearly) the cheapest per slice, a bound counting as the figure it bounds
        assert cost[names[0]] <= min(cost.values()) * (1 + TIE)
    for n in bound:  # a bound that does not make its size look good leaves it untried
        if cost[n] > min(cost.values()) * (1 + TIE) and n in names:
            assert all(names.index(n) > names.index(m) for m in means)


@given(st.dictionaries(st.sampled_from([p.name for p in CANDS]), st.floats(0.001, 100.0), min_size=1))
def test_ranking_properties(means):
    r = RunTimes()
    for name, t in means.items():
        r.add((7, 9000), name, t)
    c = r.choose((7, 9000), CANDS)
    slices = {p.name: p.slices for p in CANDS}
    cost = {n: t * slices[n] for n, t in means.items()}
    assert sorted(p.name for p in c.ranked + ((c.explore,) if c.explore else ())) == sorted(p.name for p in CANDS)
    assert cost[c.ranked[0].name] <= min(cost.values()) * (1 + TIE)  # the first is (nearly) the cheapest per slice
    if c.explore is not None:
        assert c.explore.name not in means
        largest = max((p for p in CANDS if p.name in means), key=lambda p: (p.slices, p.memory_mib))
        assert cost[largest.name] <= min(cost.values()) * (1 + TIE) and c.explore.slices > largest.slices


def dyn():
    return Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        worker=Worker(executor="process"),
        plugins=[plugins.mig(dynamic=True, keep_idle=30.0)],
        progress=False,
    )


def test_dynamic_mig_learns_the_size_a_task_runs_best_on():
    """Tasks that run 2.5 times as fast on a 2g as on a 1g (fewer slice-seconds: a clear win, not the tie that
    exactly twice as fast would be, which a loaded machine's noise decides either way) end up on 2g partitions,
    with both sizes measured; the pool says why it made each partition."""
    with dyn() as c:
        for _ in range(8):
            gather(*[T.scaling(0.2, power=1.32) for _ in range(4)]) >> c
        for _ in range(40):  # on a loaded machine a resize can still be under way after 8 rounds: more, with a
            last = gather(*[T.scaling(0.2, power=1.32) for _ in range(3)]) >> c  # pause for the controller
            if last == ["2g.20gb"] * 3:
                break
            time.sleep(0.1)
        measured = c.controller.sizes.measured(next(iter(c.controller.sizes._mean)))
        live = [p.profile for p in c.partitions]
        changes = c.changes
    assert 2.0 < measured["1g.10gb"] / measured["2g.20gb"] < 3.0
    assert last == ["2g.20gb"] * 3 and live.count("2g.20gb") >= 3
    assert changes and all(ch["reason"] for ch in changes)  # each change says why


def test_dynamic_mig_keeps_tasks_that_do_not_scale_on_small_partitions():
    with dyn() as c:
        for _ in range(6):
            gather(*[T.scaling(0.15, cap=1) for _ in range(4)]) >> c
        changes = c.changes
        live = [p.profile for p in c.partitions]
    assert not any("run better on 2g" in ch["reason"] or "run better on 3g" in ch["reason"] for ch in changes)
    assert live.count("1g.10gb") >= 3 and live.count("2g.20gb") <= 1  # the one 2g tried at the start, at most


def test_a_min_memory_task_takes_the_smallest_free_partition_that_holds_it():
    with Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        progress=False,
        plugins=[plugins.mig(layout={"3g.40gb": 1, "1g.10gb": 2})],
    ) as c:
        small = migpool.function(min_memory="5GB")(T.profile_after.fn)
        large = migpool.function(min_memory="20GB")(T.profile_after.fn)
        assert small(0) >> c == "1g.10gb" and large(0) >> c == "3g.40gb"
        busy = [c.submit(T.profile_after(0.5).on("1g.10gb")) for _ in range(2)]
        time.sleep(0.2)
        assert small(0) >> c == "3g.40gb"  # the 1g partitions are busy: a larger one that holds it takes it
        assert [f.result() for f in busy] == ["1g.10gb"] * 2
        huge = migpool.function(min_memory="50GB")(T.profile_after.fn)
        try:
            huge(0) >> c
            raise AssertionError("no partition holds 50GB")
        except migpool.PluginError as e:
            assert "no partition of this pool has min_memory=50GB" in str(e) and "3g.40gb" in str(e)


# --- run times kept from one pool to the next (pool/remembered.py) ---
def test_a_function_name_is_the_same_in_another_process_and_changes_with_the_code():
    import functools
    import subprocess
    import sys
    from pathlib import Path

    from migpool.pool.dynamic.sizing import function_name

    here = function_name(T.scaling.fn)
    code = (
        "import pool_tasks as T; from migpool.pool.dynamic.sizing import function_name; "
        "print(function_name(T.scaling.fn))"
    )
    for seed in ("1", "2"):  # string hashing differs between these processes
        env = {"PYTHONPATH": str(Path(__file__).parents[1]), "PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert out.stdout.strip() == here
    assert here.startswith("pool_tasks.scaling:")

    def f(x):
        return x in {"a", "b"}

    def g(x):
        return x in {"a", "c"}

    assert function_name(f).split(":")[1] != function_name(g).split(":")[1]
    assert function_name(functools.partial(f, 1)) is None


def test_known_figures_are_taken_up_by_the_function_of_that_name_only():
    r = RunTimes({("mod.f:abc", 9000.0): {"1g.10gb": 0.4, "2g.20gb": 0.2}})
    r.name(1, "mod.f:abc")
    r.name(2, "mod.g:def")
    assert r.measured((1, 9000.0)) == {"1g.10gb": 0.4, "2g.20gb": 0.2}
    assert r.choose((1, 9000.0), CANDS).ranked[0].name == "2g.20gb"
    assert r.measured((2, 9000.0)) == {} and r.measured((1, 0)) == {}
    r.add((1, 9000.0), "1g.10gb", 0.5)  # new runs move the known figure
    r.add((3, 9000.0), "1g.10gb", 0.5)  # a function without a lasting name is not kept
    assert r.named() == {("mod.f:abc", 9000.0): {"1g.10gb": 0.4 * 0.7 + 0.5 * 0.3, "2g.20gb": 0.2}}


def test_the_file_keeps_each_gpu_model_and_function_and_survives_a_bad_file(tmp_path, caplog):
    from migpool.pool.dynamic import remembered

    path = tmp_path / "run-times.json"
    remembered.save(path, "A100", {("f", 1.0): {"1g.10gb": 1.0}})
    remembered.save(path, "A100", {("g", 1.0): {"2g.20gb": 2.0}})
    remembered.save(path, "H100", {("f", 1.0): {"1g.10gb": 0.5}})
    remembered.save(path, "A100", {("f", 1.0): {"1g.10gb": 0.8}})  # replaces the earlier figure of f
    assert remembered.load(path, "A100") == {("f", 1.0): {"1g.10gb": 0.8}, ("g", 1.0): {"2g.20gb": 2.0}}
    assert remembered.load(path, "H100") == {("f", 1.0): {"1g.10gb": 0.5}}
    path.write_text('{"entries": [{"gpu": "A100"}]}')
    assert remembered.load(path, "A100") == {} and "cannot be read" in caplog.text
    remembered.save(path, "A100", {("f", 1.0): {"1g.10gb": 0.8}})  # a bad file is replaced
    assert remembered.load(path, "A100") == {("f", 1.0): {"1g.10gb": 0.8}}


def test_a_second_pool_starts_from_the_sizes_the_first_learned():
    def learned(c):
        return next(iter(c.controller.sizes.named().values()), {})

    with dyn() as c:
        for _ in range(20):  # until a 1g and a 2g are measured (the 2g runs twice as fast)
            gather(*[T.scaling(0.2) for _ in range(4)]) >> c
            if {"1g.10gb", "2g.20gb"} <= set(learned(c)):
                break
        first = learned(c)
    assert first["1g.10gb"] > 1.6 * first["2g.20gb"]
    with dyn() as c:  # the same function: it starts from those figures, and makes no 1g
        assert gather(*[T.scaling(0.2) for _ in range(2)]) >> c
        made = [ch["profile"] for ch in c.changes if ch["action"] == "create"]
    assert made and "1g.10gb" not in made and "2g.20gb" in made
    with Compute(
        provider=migpool.Local(simulate="A100-80GB"),
        worker=Worker(executor="process"),
        progress=False,
        plugins=[plugins.mig(dynamic=True, remember=False)],
    ) as c:  # starts from nothing: smallest first
        gather(*[T.scaling(0.2) for _ in range(2)]) >> c
        made = [ch["profile"] for ch in c.changes if ch["action"] == "create"]
    assert sorted(made) == ["1g.10gb", "2g.20gb"]


def test_a_job_waits_for_a_busy_faster_partition_only_when_it_finishes_sooner_there():
    import types

    from migpool.pool.dynamic.policy import DynamicPolicy
    from migpool.pool.dynamic.view import PoolState, WorkerState
    from migpool.pool.scheduler.core import serves

    def fn():
        pass

    def job(started=0.0, partition=None):
        task = types.SimpleNamespace(fn=fn, partition=partition, need_mib=9000.0, node=None)
        return types.SimpleNamespace(fid=1, started=started, task=task)

    def worker(profile, *running):
        part = types.SimpleNamespace(profile=profile, memory_mib=A100.profile(profile).memory_mib)
        return WorkerState(partition=part, outstanding=list(running))

    now = 100.0  # the policy's clock stands still: every figure below is exact
    idle = worker("1g.10gb")
    pool = PoolState(
        rule=serves, workers=[idle, worker("2g.20gb", job(now - 0.15))], clock=lambda: now
    )  # free in 0.05 s
    d = DynamicPolicy([], pool, effects=None, keep_idle=30.0)
    d.sizes.add((1, 9000.0), "1g.10gb", 0.4)
    d.sizes.add((1, 9000.0), "2g.20gb", 0.2)  # twice as fast on a 2g
    held = {}
    assert d.hold(job(), idle, held)  # 0.05 + 0.2 on the 2g beats 0.4 on the 1g
    assert not d.hold(job(), idle, held)  # the next one would wait 0.25 + 0.2: the idle 1g is sooner
    assert not d.hold(job(partition="1g.10gb"), idle, {})  # a task that names its profile takes it
    pool.workers[1] = worker("2g.20gb", job(now))  # just started: 0.2 + 0.2 is no sooner
    assert not d.hold(job(), idle, {})
    pool.workers[1] = worker("2g.20gb", job(now - 0.5))  # ran past twice its figure: not waited for
    assert not d.hold(job(), idle, {})
    assert not d.hold(job(), worker("3g.40gb"), {})  # the idle size is not measured: it runs there (and is timed)
