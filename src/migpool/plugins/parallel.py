"""`Joblib` and `Sklearn`: joblib's parallel backend pointed at the pool, so that `Parallel(n_jobs=-1)`, and
scikit-learn's estimators and searches with n_jobs (they run on joblib), spread over every worker of every node.

Where it runs: in this process, while the pool is open (`with Compute(..., plugins=[Joblib()]):`), as the
reference's plugins do it: on entering the pool the backend is registered (as "migpool", and as "skyward" for code
that names the reference's) and made the default of the thread that opened the pool; each batch of calls joblib
would hand one of its own workers is sent to the pool as one task. Inside a task, a Parallel runs on that worker as
joblib's default says.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from ..errors import PluginError
from ..pool.api.providers import WorkerSpec
from .base import Plugin
from .frameworks import add_pip

BACKEND_NAMES = ("migpool", "skyward")


def run_batch(batch: Callable[[], Any]) -> Any:
    """A joblib batch, run on a worker. It travels as this task's argument, not as its function: a pool keeps every
    distinct function it was given (and each worker too), which for batches would be each batch's data, kept."""
    return batch()


def pool_workers(pool: Any) -> int:
    """The workers of every node of the open pool (joblib's n_jobs=-1)."""
    return max(1, int(pool.concurrency) * max(1, int(pool.current_nodes())))


def backend_class() -> type:
    """joblib's backend class for a pool (joblib imported here: a pool without the plugin does not need it)."""
    import importlib

    parallel = importlib.import_module("joblib.parallel")  # (by name: joblib has no type information)
    sequential = parallel.SequentialBackend
    batching: Any = parallel.AutoBatchingMixin
    base: Any = parallel.ParallelBackendBase

    class PoolBackend(batching, base):
        """Each batch is one task of the pool; n_jobs=-1 (or more than the pool has) is every worker of it."""

        supports_retrieve_callback = True
        supports_timeout = True
        uses_threads = False

        def __init__(self, pool: Any, nesting_level: int | None = None, **kwargs: Any) -> None:
            super().__init__(nesting_level=nesting_level, **kwargs)
            self.pool = pool
            self.pending: set[Future[Any]] = set()  # sent, not yet done (cancelled when joblib gives up)

        def effective_n_jobs(self, n_jobs: int | None) -> int:
            if n_jobs == 0:
                raise ValueError("n_jobs == 0 in Parallel has no meaning")
            total = pool_workers(self.pool)
            if n_jobs is None or n_jobs < 0:
                return max(1, total + 1 + n_jobs) if n_jobs is not None and n_jobs < -1 else total
            return min(n_jobs, total)

        def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
            self.parallel = parallel
            return self.effective_n_jobs(n_jobs)

        def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> Future[Any]:
            future: Future[Any] = self.pool.submit(run_batch, func)  # (the batch is an argument: see run_batch)
            self.pending.add(future)
            future.add_done_callback(self.pending.discard)
            if callback is not None:
                future.add_done_callback(callback)
            return future

        apply_async = submit  # (the name joblib before 1.5 calls)

        def retrieve_result_callback(self, out: Future[Any]) -> Any:
            return out.result()

        def retrieve_result(self, out: Future[Any], timeout: float | None = None) -> Any:
            return out.result(timeout=timeout)

        def abort_everything(self, ensure_ready: bool = True) -> None:
            """A call failed and joblib gives up: the batches not started yet are not run (the pool skips a
            cancelled task); those running finish on their workers."""
            for future in list(self.pending):
                future.cancel()

        def get_nested_backend(self) -> tuple[Any, int | None]:
            return sequential(nesting_level=(self.nesting_level or 0) + 1), None

    return PoolBackend


class Joblib(Plugin):
    """joblib's parallel backend over the pool's workers, in this process while the pool is open:
    `Parallel(n_jobs=-1)(delayed(f)(x) for x in xs)` runs its calls as the pool's tasks, on every worker of every
    node (n_jobs=-1: all of them; n_jobs=k: k of them). Adds joblib to the workers' Image.

    Joblib(version=None)   (the reference's parameter: a version to pin, else the latest)
    """

    kind = "joblib"

    def __init__(self, version: str | None = None) -> None:
        self.version = version

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r})"

    def packages(self) -> tuple[str, ...]:
        return (f"joblib=={self.version}" if self.version else "joblib",)

    def transform_image(self, image: Any) -> Any:
        return add_pip(image, *self.packages())

    def around_process(self, worker: WorkerSpec) -> Mapping[str, str]:
        from ..pool.worker.distributed import with_initializer
        from ..pool.worker.frameworks import JOBLIB_INIT, SKLEARN_INIT

        return with_initializer(worker.env, SKLEARN_INIT if self.kind == "sklearn" else JOBLIB_INIT)

    def around_pool(self, pool: Any) -> contextlib.AbstractContextManager[Any] | None:
        return self.backend(pool)

    @contextlib.contextmanager
    def backend(self, pool: Any) -> Iterator[None]:
        import importlib

        try:
            joblib = importlib.import_module("joblib")
        except ImportError:
            raise PluginError(
                f"plugins.{type(self).__name__}() needs joblib in this process (its Parallel runs here and sends "
                "the calls to the pool): pip install joblib"
            ) from None
        cls = backend_class()
        for name in BACKEND_NAMES:
            joblib.register_parallel_backend(name, lambda: cls(pool))
        with joblib.parallel_config(backend=BACKEND_NAMES[0]):
            yield


class Sklearn(Joblib):
    """scikit-learn over the pool's workers: the Joblib plugin's backend (scikit-learn parallelises through
    joblib: GridSearchCV(n_jobs=-1) fits its candidates on every worker of every node), with scikit-learn and
    joblib added to the workers' Image. While the pool is open, this process's warning filters are those whose
    category is Python's own (scikit-learn ships the filters with each batch, and a worker without the package
    that defines a category could not read the batch); they are restored when the pool closes.

    Sklearn(version=None)   (the reference's parameter: a scikit-learn version to pin, else the latest)
    """

    kind = "sklearn"

    def packages(self) -> tuple[str, ...]:
        return (f"scikit-learn=={self.version}" if self.version else "scikit-learn", "joblib")

    @contextlib.contextmanager
    def backend(self, pool: Any) -> Iterator[None]:
        with warnings.catch_warnings():  # (restores the filters on leaving)
            kept = [f for f in warnings.filters if _builtin_category(f[2])]
            warnings.filters.clear()  # type: ignore[attr-defined]  # (a list; typeshed says Sequence)
            warnings.filters.extend(kept)  # type: ignore[attr-defined]
            with super().backend(pool):
                yield


def _builtin_category(category: Any) -> bool:
    root = str(category.__module__).split(".")[0]
    return root == "builtins" or root in sys.stdlib_module_names
