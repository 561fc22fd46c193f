"""Train small networks on MIG partitions at once: the reference document's walkthrough, on migpool.

Real MIG GPU (needs root; it applies the layout):   python examples/nvidia_mig.py
Anywhere (a simulated A100; trains on the CPU):     python examples/nvidia_mig.py --simulate A100-80GB
A GPU left whole (no MIG change; read-only safe):   python examples/nvidia_mig.py --whole-gpu 0

Without torch in this interpreter the workers get an environment of their own with it (worker_image): on a
simulated GPU the CPU wheel (a few hundred MB), on a real one the CUDA wheel (several GB), asked first when a
person is at the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

import migpool as sky


@sky.function
def train_on_partition(epochs: int, lr: float, seed: int = 0) -> dict:
    """Train a small feed-forward classifier on synthetic data on whatever CUDA device this worker sees."""
    import os

    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    info = sky.instance_info()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu only when simulated
    torch.manual_seed(seed)
    teacher = torch.randn(784, 10)  # labels come from a hidden linear rule, so the task is learnable
    x = torch.randn(5000, 784)
    y = (x @ teacher).argmax(1)
    x, y = x.to(device), y.to(device)
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        epoch_loss, correct, total = 0.0, 0, 0
        for bx, by in loader:
            optimizer.zero_grad()
            out = model(bx)
            loss = criterion(out, by)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
            correct += (out.argmax(1) == by).sum().item()
            total += by.size(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {
        "worker": info.worker,
        "partition": os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        "profile": info.partition.profile if info.partition else "whole GPU" if device.type == "cuda" else "cpu",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "final_loss": round(epoch_loss / len(loader), 4),
        "accuracy": round(100.0 * correct / total, 1),
        "seconds": round(time.perf_counter() - start, 2),
    }


CPU_WHEELS = "https://download.pytorch.org/whl/cpu"  # PyTorch's own index of its CPU-only wheels


def worker_image(
    simulated: bool, missing: list[str], ask: Callable[[str], bool] | None, env: MutableMapping[str, str]
) -> sky.Image:
    """The workers' image: torch, from this interpreter where it has it (`missing` empty: nothing is built).
    Else, on a simulated GPU (which trains on the CPU), the CPU wheel: `env` gets the index for pip and uv and an
    image folder of its own, so a CUDA environment is never mistaken for it. `ask` (a person at the terminal) is
    asked before anything is built; no: SystemExit, nothing built."""
    image = sky.Image(pip=["torch"])
    if not missing:
        return image
    what = "CPU torch (a few hundred MB)" if simulated else "CUDA torch (several GB)"
    if ask is not None and not ask(f"torch is not installed here: build the workers an environment with {what}?"):
        raise SystemExit("nvidia_mig.py: nothing built; install torch here (pip install torch), or answer y")
    if simulated:
        images = env.get("MIGPOOL_IMAGE_DIR") or Path(
            env.get("MIGPOOL_CACHE_DIR") or Path.home() / ".cache/migpool", "images"
        )
        env["MIGPOOL_IMAGE_DIR"] = str(Path(images, "cpu"))  # apart from the CUDA ones (Image's folder)
        env["PIP_INDEX_URL"] = env["UV_INDEX_URL"] = CPU_WHEELS
    return image


def _ask(question: str) -> bool:
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--simulate", metavar="GPU", help="simulated GPU, e.g. A100-80GB (also $MIGPOOL_SIMULATE)")
    ap.add_argument("--profile", default="3g.40gb")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--whole-gpu", type=int, metavar="INDEX", help="no MIG: pin the workers to this GPU by its UUID")
    args = ap.parse_args(argv)
    plugin = sky.plugins.gpus([args.whole_gpu]) if args.whole_gpu is not None else sky.plugins.mig(profile=args.profile)
    simulated = bool(args.simulate or os.environ.get("MIGPOOL_SIMULATE"))
    ask = _ask if sys.stdin.isatty() and sys.stdout.isatty() else None
    image = worker_image(simulated, sky.Image(pip=["torch"]).missing(), ask, os.environ)
    with sky.Compute(
        provider=sky.Local(simulate=args.simulate),
        nodes=1,
        worker=sky.Worker(concurrency=args.partitions, executor="process"),
        image=image,
        plugins=[plugin],
    ) as pool:
        tasks = [train_on_partition(epochs=args.epochs, lr=1e-3, seed=i) for i in range(args.partitions)]
        results = list(sky.gather(*tasks, stream=True) >> pool)
    for r in sorted(results, key=lambda r: r["worker"]):
        print(
            f"worker {r['worker']}: {r['profile']} {r['partition']} on {r['device']}: "
            f"loss={r['final_loss']} acc={r['accuracy']}% in {r['seconds']}s"
        )
    return results


if __name__ == "__main__":
    try:
        main()
    except sky.MigpoolError as e:  # an expected refusal (read-only mode, no GPU, a layout that cannot fit)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
