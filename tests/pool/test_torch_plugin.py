"""plugins.torch(): torch.distributed over the pool's workers. Which backend can work is decided from what NVIDIA
documents of NCCL and MIG (no GPU needed to check the rules); with CPU torch, gloo runs for real."""

import pytest

import migpool
from migpool import Compute, Local, PluginError, Worker, plugins
from migpool.pool.worker.distributed import choose_backend


def test_backend_rules_for_mig_partitions():
    assert choose_backend("auto", cuda=True, nccl=(2, 31, 2), shared_gpu=False, env={}) == ("nccl", {})
    backend, env = choose_backend("auto", cuda=True, nccl=(2, 31, 2), shared_gpu=True, env={})
    assert backend == "nccl" and env == {"NCCL_MULTI_RANK_GPU_ENABLE": "1"}  # several ranks on one GPU: asked for
    assert choose_backend("auto", cuda=True, nccl=(2, 27, 5), shared_gpu=True, env={}) == ("gloo", {})
    with pytest.raises(ValueError, match="Duplicate GPU detected"):
        choose_backend("nccl", cuda=True, nccl=(2, 27, 5), shared_gpu=True, env={})
    with pytest.raises(ValueError, match="NCCL_NVLS_ENABLE=1"):
        choose_backend("nccl", cuda=True, nccl=(2, 31, 2), shared_gpu=True, env={"NCCL_NVLS_ENABLE": "1"})
    with pytest.raises(ValueError, match="needs CUDA and NCCL"):
        choose_backend("nccl", cuda=False, nccl=None, shared_gpu=False, env={})
    assert choose_backend("auto", cuda=False, nccl=None, shared_gpu=False, env={}) == ("gloo", {})
    assert choose_backend("gloo", cuda=True, nccl=(2, 31, 2), shared_gpu=True, env={}) == ("gloo", {})


def test_plugin_refusals_and_packages():
    with pytest.raises(PluginError, match="'nccl', 'gloo' or left out"):
        plugins.torch(backend="mpi")
    assert plugins.torch(version="2.4.1", vision="latest").packages == ["torch==2.4.1", "torchvision"]
    assert plugins.torch(version=">=2.4").packages == ["torch>=2.4"]
    with pytest.raises(PluginError, match="rank of its own"):
        with Compute(worker=Worker(executor="thread"), plugins=[plugins.torch()]):
            pass


@migpool.function
def all_reduce(x):
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(x)])
    dist.all_reduce(t)
    info = migpool.instance_info()
    return dist.get_rank(), dist.get_world_size(), dist.get_backend(), float(t.item()), info.global_worker_index


def test_gloo_ranks_over_workers_and_over_nodes_on_one_machine():
    pytest.importorskip("torch")
    with Compute(worker=Worker(concurrency=2), plugins=[plugins.torch(backend="gloo")], progress=False) as pool:
        got = migpool.gather(all_reduce(1), all_reduce(2)) >> pool  # both ranks at once: a collective
    assert sorted(r[0] for r in got) == [0, 1] and {r[1:4] for r in got} == {(2, "gloo", 3.0)}
    assert all(rank == index for rank, *_, index in got)
    with Compute(nodes=2, plugins=[plugins.torch()], progress=False) as pool:  # CPU torch: gloo is chosen
        got = all_reduce(5) @ pool
    assert [r[0] for r in got] == [0, 1] and {r[1:4] for r in got} == {(2, "gloo", 10.0)}


def test_nccl_refused_with_the_reason_on_cpu_torch(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("MIGPOOL_SIMULATE", "A100-80GB")
    with pytest.raises(migpool.WorkerLostError, match="needs CUDA and NCCL"):
        with Compute(
            provider=Local(),
            worker=Worker(concurrency=2),
            plugins=[plugins.mig(profile="3g.40gb"), plugins.torch(backend="nccl")],
        ):
            pass
