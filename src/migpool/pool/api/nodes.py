"""How many nodes a pool has and how that may change (`Nodes`), the reference's operational `Options`, and what
`Compute(nodes=...)` takes, read into one `Nodes`.

`Nodes(initial, min, max)` with a `max` above `min` makes a pool elastic: it reclaims nodes down to `min` when they
sit idle for `Options.autoscale_idle_timeout` seconds and starts them again, up to `max`, when tasks wait
(pool/scheduler/elastic.py decides; a local pool starts and ends node processes, a Ray pool its actors on a Ray
node, raypool/elastic.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import PluginError


def _whole(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise PluginError(f"Nodes: {name} must be a whole number >= {least}, not {value!r}")
    return value


class Nodes:
    """A pool's node count: `initial` nodes at the start (at least `min`), never fewer than `min` (default:
    `initial`) nor more than `max` (default: the larger of `initial` and `min`). The reference's 0.10 spelling
    `Nodes(desired=...)` is taken too. `min=0` lets an idle pool scale to zero nodes; a task sent then starts one."""

    __slots__ = ("initial", "min", "max")

    def __init__(
        self, initial: int | None = None, min: int | None = None, max: int | None = None, *, desired: int | None = None
    ) -> None:
        if initial is not None and desired is not None:
            raise PluginError("Nodes takes initial= (desired= is its 0.10 name), not both")
        start = initial if initial is not None else desired
        if start is None:
            raise PluginError("Nodes needs initial=, the nodes to start with, such as Nodes(initial=1, min=0, max=2)")
        self.initial = _whole("initial", start, 0)
        self.min = self.initial if min is None else _whole("min", min, 0)
        self.max = (self.initial if self.initial >= self.min else self.min) if max is None else _whole("max", max, 1)
        if self.min > self.max or self.initial > self.max:
            raise PluginError(
                f"Nodes(initial={self.initial}, min={self.min}, max={self.max}): min and initial must not pass max"
            )

    @property
    def elastic(self) -> bool:
        """Whether the count may change while the pool runs."""
        return self.min < self.max

    @property
    def start(self) -> int:
        """The nodes a pool starts with."""
        return max(self.initial, self.min)

    @property
    def desired(self) -> int:
        """The 0.10 name of `initial`."""
        return self.initial

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Nodes) and (self.initial, self.min, self.max) == (other.initial, other.min, other.max)

    def __hash__(self) -> int:
        return hash((self.initial, self.min, self.max))

    def __repr__(self) -> str:
        return f"Nodes(initial={self.initial}, min={self.min}, max={self.max})"


def as_nodes(value: int | tuple[int, int] | Nodes) -> Nodes:
    """What `Compute(nodes=)` takes, as the reference reads it: n is Nodes(initial=n); a pair (a, b) is
    Nodes(initial=a, min=a, max=b); a Nodes as it is."""
    if isinstance(value, Nodes):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return Nodes(initial=value[0], min=value[0], max=value[1])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PluginError(
            f"nodes must be a whole number >= 1, a pair (min, max) or a Nodes(initial, min, max), not {value!r}"
        )
    return Nodes(initial=value)


@dataclass(frozen=True)
class Options:
    """The reference's operational options (0.12's fields and defaults; 0.10's extra names are taken too).

    What a pool (local or Ray) does with them:
      autoscale_idle_timeout  seconds a node may sit idle before an elastic pool (`Nodes` with max > min)
                              reclaims it
      autoscale_cooldown      seconds between two changes of an elastic pool's size
      task_run_timeout        the timeout of a task that names none (0: none)
    Accepted and without effect here (they tune the reference's provisioning, SSH and control plane): ssh_timeout,
    provision_retry_delay, max_provision_attempts, provision_timeout, worker_timeout, cluster, ready_timeout,
    shutdown_timeout, strict_version, task_queue_timeout (a task waits in the pool's queue, which is not bounded),
    health_interval, health_failures; and 0.10's selection, bootstrap_timeout, ssh_retry_interval,
    reconcile_tick_interval, console, logging, retry_on_interruption, default_compute_timeout and worker.
    health_command and health_checker are refused: migpool probes no node's health (a dead worker process is
    restarted by the pool)."""

    ssh_timeout: float = 240.0
    provision_retry_delay: float = 2.0
    max_provision_attempts: int = 30
    provision_timeout: float | None = 300.0
    worker_timeout: float = 180.0
    autoscale_idle_timeout: float = 120.0
    autoscale_cooldown: float = 0.0
    task_queue_timeout: float = 0.0
    task_run_timeout: float = 0.0
    health_command: str | None = None
    health_interval: float = 30.0
    health_failures: int = 3
    health_checker: Any = None
    cluster: bool | None = None
    ready_timeout: float = 300.0
    shutdown_timeout: float = 60.0
    strict_version: bool = False
    # 0.10's names
    selection: str = "cheapest"
    worker: Any = None
    bootstrap_timeout: float | None = None
    ssh_retry_interval: float | None = None
    reconcile_tick_interval: float = 15.0
    console: Any = True
    logging: Any = True
    retry_on_interruption: int = 3
    default_compute_timeout: float | None = None

    def __post_init__(self) -> None:
        for name in ("autoscale_idle_timeout", "autoscale_cooldown", "task_run_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise PluginError(f"Options: {name} must be a number of seconds >= 0, not {value!r}")
        if self.health_command is not None or self.health_checker is not None:
            raise PluginError(
                "Options(health_command=/health_checker=): migpool probes no node's health (it restarts a worker "
                "process that dies); leave them unset"
            )
