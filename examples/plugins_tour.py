"""The reference system's plugins on migpool: each part runs where its packages are (the others say why not).

python examples/plugins_tour.py     (joblib and scikit-learn: pip install joblib scikit-learn; MPS: a GPU whose
                                     nvidia-cuda-mps-control is on PATH, or the simulator with a stand-in)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

import migpool as sky


def slow_double(x: int) -> int:
    time.sleep(0.2)
    return x * 2


def joblib_part() -> None:
    # --8<-- [start:joblib]
    from joblib import Parallel, delayed

    worker = sky.Worker(concurrency=4, executor="process")
    with sky.Compute(worker=worker, plugins=[sky.plugins.Joblib()]):
        t0 = time.perf_counter()
        # on the pool's 4 workers
        results = Parallel(n_jobs=-1)(delayed(slow_double)(i) for i in range(16))
        took = time.perf_counter() - t0
        print(f"joblib: 16 calls of 0.2 s in {took:.1f} s; sum {sum(results)}")
    # --8<-- [end:joblib]


def sklearn_part() -> None:
    # --8<-- [start:sklearn]
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    features, labels = load_digits(return_X_y=True)
    worker = sky.Worker(concurrency=4, executor="process")
    with sky.Compute(worker=worker, plugins=[sky.plugins.Sklearn()]):
        tree = DecisionTreeClassifier(random_state=0)
        grid = {"max_depth": [2, 4, 8, None]}
        search = GridSearchCV(tree, grid, cv=3, n_jobs=-1)
        search.fit(features, labels)  # each fit is a task of the pool
    best = search.best_params_["max_depth"]
    print(f"sklearn: best max_depth={best}, accuracy {search.best_score_:.2f}")
    # --8<-- [end:sklearn]


@sky.function
def mps_directories() -> str:
    return os.environ["CUDA_MPS_PIPE_DIRECTORY"]


def mps_part() -> None:
    # --8<-- [start:mps]
    plugins = [
        sky.plugins.Mig(profile="3g.40gb", count=2),
        sky.plugins.Mps(active_thread_percentage=50),
    ]
    local = sky.Local(simulate="A100-80GB")
    with sky.Compute(provider=local, plugins=plugins) as pool:
        pipes = sky.gather(*[mps_directories() for _ in range(4)]) >> pool
        print("mps: a daemon per partition:", sorted(set(pipes)))
    # --8<-- [end:mps]


def frameworks_part() -> None:
    # --8<-- [start:frameworks]
    sky.Compute(
        worker=sky.Worker(concurrency=2),  # each worker one process of the group
        plugins=[
            sky.plugins.Jax(),  # jax.distributed over every worker of every node
            sky.plugins.Keras(backend="jax"),  # KERAS_BACKEND, and data parallel over the jax group
            sky.plugins.HuggingFace(token=os.environ.get("HF_TOKEN")),  # HF_TOKEN and the hub's cache
            sky.plugins.Cuml(),  # cuml.accel: scikit-learn on the GPU
        ],
    )
    sky.plugins.Torch(backend="gloo")  # torch.distributed: each worker a rank
    fsdp = {"sharding_strategy": "FULL_SHARD"}
    sky.plugins.Accelerate(config={"fsdp": fsdp, "mixed_precision": "bf16"})
    # --8<-- [end:frameworks]


def have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


if __name__ == "__main__":
    joblib_part() if have("joblib") else print("joblib: not installed here (pip install joblib)")
    sklearn_part() if have("sklearn") else print("sklearn: not installed here (pip install scikit-learn)")
    if shutil.which("nvidia-cuda-mps-control"):
        mps_part()
    else:
        print("mps: nvidia-cuda-mps-control (from the NVIDIA driver) is not on PATH here")
    frameworks_part()  # (made, not opened: jax, keras and cuML are not needed to build the plugins)
