"""plugins.Jax, Keras, Accelerate, Cuml, HuggingFace and the reference's names. No jax, keras, accelerate or cuML
here: stand-in modules (on the workers' path, with package metadata so the Image needs no install) record the
calls each worker makes before its first task; the real frameworks are not needed for what is checked."""

import os
import textwrap

import pytest
from plugin_tasks import module_state

from migpool import Compute, Image, Local, PluginError, Worker, gather, plugins
from migpool.pool.api.info import Partition
from migpool.pool.api.task import Task
from migpool.pool.worker.distributed import INIT_ENV, TORCH_INIT
from migpool.pool.worker.frameworks import jax_coordinator

STANDINS = {
    "jax/__init__.py": """
        STATE = {}

        class distributed:
            @staticmethod
            def initialize(coordinator_address, num_processes, process_id):
                STATE["initialize"] = [coordinator_address, num_processes, process_id]
    """,
    "keras/__init__.py": """
        import os

        STATE = {"backend at import": os.environ.get("KERAS_BACKEND")}
        from . import distribution
    """,
    "keras/distribution.py": """
        from . import STATE

        def list_devices():
            return ["cpu:0"]

        class DataParallel:
            def __init__(self, devices, auto_shard_dataset=True):
                self.args = [devices, auto_shard_dataset]

        def set_distribution(d):
            STATE["set_distribution"] = d.args
    """,
    "keras/src/__init__.py": "",
    "keras/src/backend/__init__.py": "",
    "keras/src/backend/jax/__init__.py": "",
    "keras/src/backend/jax/distribution_lib.py": """
        from keras import STATE

        def initialize_rng():
            STATE["initialize_rng"] = True
    """,
    "torch/__init__.py": """
        STATE = {}

        class cuda:
            @staticmethod
            def is_available():
                return False
    """,
    "torch/distributed.py": """
        import os

        from torch import STATE

        def is_initialized():
            return "init_process_group" in STATE

        def is_nccl_available():
            return False

        def init_process_group(backend, init_method, rank=None, world_size=None, timeout=None):
            assert not is_initialized(), "a second group in one process"
            rank = int(os.environ["RANK"]) if rank is None else rank
            STATE["init_process_group"] = [backend, init_method, rank, world_size]
    """,
    "cuml/__init__.py": "STATE = {}\n",
    "cuml/accel.py": """
        from cuml import STATE

        def install():
            STATE["installed"] = True
    """,
}
DISTRIBUTIONS = ["jax", "keras", "accelerate", "cuml-cu12", "huggingface-hub", "torch"]


@pytest.fixture
def standins(tmp_path, monkeypatch):
    root = tmp_path / "site"
    for path, text in STANDINS.items():
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    for name in DISTRIBUTIONS:
        d = root / f"{name.replace('-', '_')}-0.0.1.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    monkeypatch.syspath_prepend(str(root))  # (this process: the Image finds the packages installed)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    return root


def states(pool, module, n=6, env=()):
    got = gather(*[Task(module_state, (module, env)) for _ in range(n)]) >> pool
    assert len({g["pid"] for g in got}) > 1  # (several workers answered)
    return got


def test_jax_joins_one_group_over_every_worker_of_every_node(standins):
    with Compute(
        nodes=2, worker=Worker(concurrency=2, executor="process"), plugins=[plugins.Jax()], progress=False
    ) as pool:
        got = states(pool, "jax", n=8)
    for g in got:
        assert g["state"]["initialize"] == [g["head"], 4, g["rank"]]
    assert {g["rank"] for g in got} <= {0, 1, 2, 3}


def test_jax_moves_to_the_next_port_where_torch_holds_the_head_port():
    class Info:
        head_addr, head_port = "10.0.0.7", 29500

    assert jax_coordinator(Info, {}) == "10.0.0.7:29500"
    assert jax_coordinator(Info, {INIT_ENV: TORCH_INIT}) == "10.0.0.7:29501"


def test_keras_backend_before_import_and_data_parallel_over_the_jax_group(standins):
    with Compute(worker=Worker(concurrency=2), plugins=[plugins.Jax(), plugins.Keras()], progress=False) as pool:
        got = states(pool, "keras")
    for g in got:
        assert g["state"] == {
            "backend at import": "jax",
            "set_distribution": [["cpu:0"], False],
            "initialize_rng": True,
        }
    assert plugins.Keras(backend="torch").around_process(_spec())["KERAS_BACKEND"] == "torch"
    with pytest.raises(PluginError, match="'jax', 'tensorflow' or 'torch'"):
        plugins.Keras(backend="mxnet")


def _spec():
    from migpool.pool.api.providers import WorkerSpec

    return WorkerSpec(0, "python", {})


def test_accelerate_launch_environment_from_the_pools_topology(standins):
    config = {"fsdp": {"sharding_strategy": "FULL_SHARD", "offload_params": True}, "mixed_precision": "bf16"}
    accelerate = plugins.Accelerate(config={**config, "backend": "gloo"})
    names = ("ACCELERATE_USE_FSDP", "FSDP_SHARDING_STRATEGY", "FSDP_OFFLOAD_PARAMS", "ACCELERATE_MIXED_PRECISION")
    names += ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")
    with Compute(worker=Worker(concurrency=2), plugins=[accelerate], progress=False) as pool:
        got = states(pool, "torch", env=names)
    for g in got:
        rank = g["rank"]
        assert g["state"]["init_process_group"] == ["gloo", "env://", rank, 2]
        assert g["env"] == dict(
            ACCELERATE_USE_FSDP="true",
            FSDP_SHARDING_STRATEGY="FULL_SHARD",
            FSDP_OFFLOAD_PARAMS="true",
            ACCELERATE_MIXED_PRECISION="bf16",
            MASTER_ADDR=g["head"].split(":")[0],
            MASTER_PORT=g["head"].split(":")[1],
            WORLD_SIZE="2",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE="2",
            NODE_RANK="0",
        )
    deepspeed = plugins.Accelerate(config={"deepspeed": {"zero_stage": 3, "offload_param_device": "cpu"}}).env
    assert deepspeed == dict(
        ACCELERATE_USE_DEEPSPEED="true",
        ACCELERATE_DEEPSPEED_ZERO_STAGE="3",
        ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE="cpu",
    )


def test_torch_and_accelerate_share_one_group(standins):
    accelerate = plugins.Accelerate(config={"mixed_precision": "fp16"})
    for listed in ([plugins.Torch(backend="gloo"), accelerate], [accelerate, plugins.Torch(backend="gloo")]):
        with Compute(worker=Worker(concurrency=2), plugins=listed, progress=False) as pool:
            got = states(pool, "torch", env=("ACCELERATE_MIXED_PRECISION", "RANK"))
        for g in got:  # formed once, by whichever comes first (both choose gloo: no CUDA here)
            assert g["state"]["init_process_group"] == ["gloo", "env://", g["rank"], 2]
            assert g["env"] == {"ACCELERATE_MIXED_PRECISION": "fp16", "RANK": str(g["rank"])}


def test_accelerate_local_rank_is_the_one_device_a_pinned_worker_sees():
    from migpool.pool.api.info import InstanceInfo
    from migpool.pool.worker.frameworks import topology

    part = Partition(uuid="MIG-1", profile="3g.40gb", gpu_index=0, gpu_uuid="GPU-0", memory_mib=40960)
    env = topology(InstanceInfo(worker=1, node=1, total_nodes=2, workers_per_node=2, partition=part), 29500)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("3", "4", "0", "1")
    env = topology(InstanceInfo(worker=1, node=1, total_nodes=2, workers_per_node=2), 29500)
    assert (env["RANK"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"], env["NODE_RANK"]) == ("3", "1", "2", "1")


def test_cuml_accelerator_on_in_each_worker(standins):
    with Compute(worker=Worker(concurrency=2, executor="process"), plugins=[plugins.Cuml()], progress=False) as pool:
        got = states(pool, "cuml")
    assert all(g["state"] == {"installed": True} for g in got)


def test_huggingface_token_and_cache(standins, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    hf = plugins.HuggingFace("hf_secret", cache_dir=str(tmp_path / "hf"))
    assert "hf_secret" not in repr(hf)
    names = ("HF_TOKEN", "HF_HOME", "HF_HUB_CACHE")
    with Compute(
        worker=Worker(concurrency=2, executor="process"), plugins=[hf, plugins.Cuml()], progress=False
    ) as pool:
        got = states(pool, "cuml", env=names)
    want = dict(HF_TOKEN="hf_secret", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hub"))
    assert all(g["env"] == want for g in got)


def test_the_references_names():
    assert plugins.Torch is plugins.torch and plugins.Mig is plugins.mig
    assert plugins.jax is plugins.Jax and plugins.sklearn is plugins.Sklearn and plugins.mps is plugins.Mps
    assert set(plugins.PLUGINS) == {
        "torch", "huggingface", "joblib", "jax", "keras", "cuml", "sklearn", "accelerate", "mig", "mps"
    }  # fmt: skip
    assert plugins.Torch(version=None).packages == ["torch"]  # the reference's default: the latest
    assert plugins.Torch.collective and plugins.Jax.collective and plugins.Accelerate.collective
    assert plugins.Jax().transform_image(Image()).pip == ("jax[cu124]",)
    assert plugins.Cuml(cuda="cu13").transform_image(Image()).pip == ("cuml-cu13",)
    assert plugins.Keras(backend="tensorflow").transform_image(Image()).pip == ("keras", "tensorflow")
    for name in ("chain", "collective", "image", "resolve"):
        with pytest.raises(AttributeError, match="control daemon"):
            getattr(plugins, name)
    with pytest.raises(PluginError, match="Worker\\(executor='process'\\)"):
        with Compute(worker=Worker(executor="thread"), plugins=[plugins.Jax()]):
            pass


@pytest.mark.parametrize("inline", [False, True])
def test_a_thread_pools_tasks_see_the_plugins_environment(standins, monkeypatch, inline):
    """Threads run in a node process (Skyward's semantics: issue 42), which starts with the plugins' environment;
    only Local(inline=True) runs them in this process, with the environment set here while the pool is open."""
    import sys

    from plugin_tasks import environment

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("HF_TOKEN", "mine")
    names = ("KERAS_BACKEND", "HF_TOKEN")
    hf, keras = plugins.HuggingFace("theirs"), plugins.Keras(backend="torch")
    provider = Local(inline=inline)
    with Compute(provider, worker=Worker(concurrency=2), plugins=[keras, hf, plugins.Cuml()], progress=False) as pool:
        assert pool.executor == "thread" and len(pool.worker_pids) == (0 if inline else 1)
        got = gather(*[Task(environment, (names,)) for _ in range(2)]) >> pool
    assert list(got) == [{"KERAS_BACKEND": "torch", "HF_TOKEN": "theirs"}] * 2
    assert os.environ.get("KERAS_BACKEND") is None and os.environ["HF_TOKEN"] == "mine"  # put back (or untouched)
    assert ("cuml" in sys.modules) == inline  # cuml's accelerator mode where the tasks ran
    if inline:
        assert sys.modules["cuml"].STATE == {"installed": True}
        sys.modules.pop("cuml")
        sys.modules.pop("cuml.accel")
