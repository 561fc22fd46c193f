"""`migpool demo`: a NumPy workload on MIG partitions of a simulated A100 (or, with --real, of this GPU)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from .. import plugins
from ..mig.layout import Layout
from ..pool import Compute, Image, Local, Task, Worker, function, gather, instance_info
from ..ui import short_uuid, show, table

DEMO_LAYOUT = {"3g.40gb": 1, "1g.10gb": 4}


@function
def crunch(size: int, seed: int) -> dict:
    """Multiply random matrices; report where it ran and how long it took."""
    import os

    import numpy as np

    info = instance_info()
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    t = time.perf_counter()
    c = a @ b
    return dict(
        worker=info.worker,
        uuid=os.environ.get("CUDA_VISIBLE_DEVICES", "-"),
        profile=info.partition.profile if info.partition else "-",
        size=size,
        checksum=float(np.abs(c).mean()),
        seconds=time.perf_counter() - t,
        pid=os.getpid(),
    )


def run(simulate: str | None, layout: dict[str, int], console: Console, wide: bool = False) -> list[dict]:
    where = f"simulated {simulate}" if simulate else "this machine's GPU 0"
    text = str(Layout.of(layout))  # 3g.40gb:1,1g.10gb:4, as `apply` and `run --layout` take it
    console.print(f"[bold]migpool demo[/]: layout {text} on {where}", highlight=False)
    with Compute(
        provider=Local(simulate=simulate),
        worker=Worker(executor="process"),
        image=Image(pip=["numpy"]),
        plugins=[plugins.mig(layout=layout, restore=True)],
    ) as compute:
        console.print(f"{len(compute.partitions)} partitions, one worker process each")
        tasks: list[Task[dict[str, Any]]] = []
        for p in compute.partitions:
            slices = int(p.profile.split("g.")[0])
            tasks.append(crunch(256 * slices, len(tasks)).on(p.profile))
        t = time.perf_counter()
        results: list[dict[str, Any]] = list(gather(*tasks) >> compute)
        wall = time.perf_counter() - t
    tab = table(
        f"One task per partition ({wall:.2f} s wall)",
        [
            ("worker", "num"),
            ("partition", "text"),
            ("CUDA_VISIBLE_DEVICES", "text"),
            ("matmul", "num"),
            ("mean |C|", "num"),
            ("time", "num"),
        ],
    )
    for r in sorted(results, key=lambda r: r["worker"]):
        tab.add_row(
            str(r["worker"]),
            r["profile"],
            short_uuid(r["uuid"], wide),
            f"{r['size']}²",
            f"{r['checksum']:.3f}",
            f"{r['seconds'] * 1e3:.1f} ms",
        )
    show(console, tab)
    console.print(
        "Partitions restored: the simulated GPU is as it was before the demo."
        if simulate
        else "Partitions restored to the state before the demo."
    )
    sim = f" --simulate {simulate}" if simulate else ""
    console.print(f"Next: [bold]migpool plan {text}{sim}[/] draws its slices.", highlight=False)
    return results
