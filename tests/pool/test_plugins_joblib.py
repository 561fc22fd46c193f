"""plugins.Joblib / plugins.Sklearn: joblib's parallel backend over the pool's workers, in the process that opened
the pool (as the reference's plugins do it)."""

import os
import time

import pytest
from plugin_tasks import fail, nap, pid_score

from migpool import Compute, Worker, plugins

joblib = pytest.importorskip("joblib")


def test_parallel_spreads_over_every_worker():
    tasks, seconds, workers = 12, 0.5, 4
    with Compute(
        worker=Worker(concurrency=workers, executor="process"), plugins=[plugins.Joblib()], progress=False
    ) as pool:
        pids = set(pool.worker_pids)
        assert joblib.effective_n_jobs(-1) == workers and joblib.effective_n_jobs(2) == 2
        t0 = time.monotonic()
        got = joblib.Parallel(n_jobs=-1)(joblib.delayed(nap)(i, seconds) for i in range(tasks))
        took = time.monotonic() - t0
    assert [r for r, _ in got] == [2 * i for i in range(tasks)]
    ran = {pid for _, pid in got}
    assert ran <= pids and len(ran) == workers and os.getpid() not in ran  # every worker, none in this process
    assert took < 0.6 * tasks * seconds, f"{took:.2f}s for {tasks} x {seconds}s on {workers} workers"
    # the pool is closed: joblib's own default is back
    assert joblib.parallel.get_active_backend()[0].__class__.__name__ != "PoolBackend"


def test_n_jobs_minus_one_is_every_worker_of_every_node():
    with Compute(nodes=2, worker=Worker(concurrency=2), plugins=[plugins.Joblib()], progress=False) as pool:
        assert joblib.effective_n_jobs(-1) == 4
        got = joblib.Parallel(n_jobs=-1)(joblib.delayed(nap)(i, 0.3) for i in range(8))
        assert {pid for _, pid in got} == set(pool.worker_pids)  # both nodes' two workers


def test_a_failing_call_raises_in_the_caller_and_the_rest_is_not_run():
    with Compute(worker=Worker(concurrency=2, executor="process"), plugins=[plugins.Joblib()], progress=False) as pool:
        with pytest.raises(ValueError, match="bad 3"):
            calls = [joblib.delayed(fail)(3), *(joblib.delayed(nap)(i, 0.3) for i in range(20))]
            joblib.Parallel(n_jobs=-1, pre_dispatch="all", batch_size=1)(calls)
        pool.submit(nap, 0, 0).result()  # (sent last: once it ran, every earlier task not cancelled has started)
        done = sum(w["tasks_started"] for w in pool.stats()["workers"]) - 1
    assert done < 10, done  # (of 21) the batches still queued when the failure came back were not started


def test_joblib_is_added_to_the_workers_image():
    from migpool import Image

    assert plugins.Joblib(version="1.4.2").transform_image(Image()).pip == ("joblib==1.4.2",)
    assert plugins.Sklearn().transform_image(Image(pip=["joblib"])).pip == ("joblib", "scikit-learn")


def test_grid_search_fits_on_the_pools_workers():
    pytest.importorskip("sklearn")
    import warnings

    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    class ThirdParty(UserWarning):
        pass

    ThirdParty.__module__ = "some_package.warnings"
    features, labels = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ThirdParty)
        with Compute(
            worker=Worker(concurrency=3, executor="process"), plugins=[plugins.Sklearn()], progress=False
        ) as pool:
            assert not any(f[2] is ThirdParty for f in warnings.filters)  # (it would not unpickle on a worker)
            search = GridSearchCV(
                DecisionTreeClassifier(), {"max_depth": [1, 2, 3, 4, 5, 6]}, cv=3, scoring=pid_score, n_jobs=-1
            )
            search.fit(features, labels)
            pids = set(pool.worker_pids)
        assert any(f[2] is ThirdParty for f in warnings.filters)  # restored when the pool closed
    ran = {int(search.cv_results_[f"split{k}_test_score"][i]) for k in range(3) for i in range(6)}
    assert ran <= pids and len(ran) > 1 and os.getpid() not in ran


def test_batches_travel_as_arguments_and_the_pool_keeps_none_of_them():
    """Review: each batch was sent as the task's function, and a pool keeps every distinct function it was given
    (each worker too): a grid search's data, once per batch, for the pool's life."""
    import numpy as np

    data = [np.full(1 << 18, i, dtype=np.float64) for i in range(6)]  # 2 MiB each
    with Compute(worker=Worker(concurrency=2, executor="process"), plugins=[plugins.Joblib()], progress=False) as pool:
        got = joblib.Parallel(n_jobs=-1, batch_size=1)(joblib.delayed(np.sum)(d) for d in data)
        kept = len(pool.scheduler.functions.pickled)
    assert got == [float(d.sum()) for d in data]
    assert kept == 1  # one function (the batch runner), whatever the number of batches


def inner_parallel(n):
    """A task (or a joblib call) that runs a Parallel of its own: the backend it got, where its calls ran, and
    the process it ran in."""
    backend = joblib.parallel.get_active_backend()[0].__class__.__name__
    got = joblib.Parallel(n_jobs=2)(joblib.delayed(nap)(i, 0.0) for i in range(n))
    return backend, {pid for _, pid in got}, os.getpid()


def test_a_parallel_inside_a_task_runs_on_that_worker_as_the_references_does():
    """As in Skyward 0.12.1, whose plugins register the backend in the client only: a Parallel called by a task
    runs on the worker that runs the task, with joblib's default backend (its own processes there), and adds no
    task to the pool; one called inside a call the pool's backend sent runs in that worker, one call after the
    other (the backend's nested one is joblib's sequential backend, as the reference's is)."""
    with Compute(worker=Worker(concurrency=2, executor="process"), plugins=[plugins.Joblib()], progress=False) as pool:
        backend, pids, worker = pool.submit(inner_parallel, 4).result()
        started = sum(w["tasks_started"] for w in pool.stats()["workers"])
        nested = joblib.Parallel(n_jobs=-1, batch_size=1)(joblib.delayed(inner_parallel)(3) for _ in range(2))
        workers = set(pool.worker_pids)
    assert worker in workers and backend == "LokyBackend" and started == 1
    assert pids and not pids & (workers | {os.getpid()})  # joblib's own worker processes, started by that worker
    for backend, pids, worker in nested:
        assert backend == "SequentialBackend" and pids == {worker} and worker in workers
