"""The reference system's (Skyward 0.12.1) names that have no meaning on migpool's machines: each can be named,
and using it (constructing, calling, reading an attribute) raises ReferenceOnlyError, one line that says why and
what to use instead. Its providers that migpool lacked are here too (they refuse where a pool is given one)."""

from __future__ import annotations

from typing import Any, Literal, NoReturn

from ...errors import ReferenceOnlyError
from .providers import Cloud

NO_DAEMON = "migpool has no control-plane daemon and no event log: its pools live in this process"


class Refused:
    """Base of the refused classes: constructing one raises ReferenceOnlyError with `reason`."""

    reason = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        refuse(type(self).__name__, self.reason)


def refuse(name: str, reason: str) -> NoReturn:
    raise ReferenceOnlyError(f"migpool has no sky.{name}: {reason}")


def refused(name: str, reason: str) -> type[Refused]:
    """A class named `name` that refuses to be made (isinstance checks against it simply fail)."""
    return type(name, (Refused,), {"reason": reason, "__doc__": f"The reference's {name} (refuses: {reason})."})


class RefusedModule:
    """A module of the reference's with no meaning here: any attribute or call raises ReferenceOnlyError."""

    def __init__(self, name: str, reason: str) -> None:
        self._name, self._reason = name, reason

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        refuse(f"{self._name}.{attr}", self._reason)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        refuse(self._name, self._reason)

    def __repr__(self) -> str:
        return f"<refused module sky.{self._name}>"


STORE = (
    "it mounts or syncs an object-store bucket on cloud nodes; migpool's workers see this machine's files: mount "
    "the bucket on the machine (or read it with its own client inside the task)"
)
Spec = refused(
    "Spec",
    "a Spec is a cloud machine shape chosen by price; migpool runs on the machine it is on: use "
    "Compute(provider=migpool.Local(), accelerator=...), or provider=migpool.Ray() for a Ray cluster",
)
Volume = refused("Volume", STORE)
Storage = refused("Storage", STORE)
storage = RefusedModule("storage", STORE)
Port = refused(
    "Port",
    "its port bridge forwards a local port to a cloud node through the daemon; migpool's workers run on this "
    "machine: have the task listen on a port and connect to 127.0.0.1 (or the node's address on a Ray cluster)",
)
DockerImage = refused(
    "DockerImage",
    "migpool starts no containers; Image(pip=..., env=...) makes the workers' environment on this machine",
)
HealthChecker = refused(
    "HealthChecker",
    "migpool watches its worker processes itself (a worker that dies is restarted and its task failed or retried)",
)
MetricSpec = refused(
    "MetricSpec",
    "migpool's telemetry reads the GPUs and partitions itself: `migpool top`, or Compute(metrics_port=...)",
)
metrics = RefusedModule("metrics", MetricSpec.reason)
observability = RefusedModule(
    "observability", "migpool logs with Python's logging (the 'migpool' logger): configure that instead"
)
app = refused(
    "app",
    "`sky run` and @sky.app are the reference's CLI; write the script with `with migpool.Compute(...)`, or run a "
    "command on partitions with `migpool run`",
)
DistributedRegistry = refused("DistributedRegistry", "use migpool.dict(name), the pool's shared dict, as a registry")


def registry(name: str) -> NoReturn:
    """The reference's registry (refuses): use migpool.dict(name)."""
    refuse("registry", DistributedRegistry.reason)


EVENTS = (
    "ComputeCreated ComputeBound ComputeAdopted ComputeProvisioning ComputeReady ComputeDegraded GenerationCreated "
    "GenerationApplied LeaseClaimed LeaseReleased ComputeAbandoned ComputeDeleting ComputeDeletionFailed "
    "StraysTerminated ComputeDeleted CostEvent NodeEvent ProgressEvent ConsoleEvent EmittedEvent PhaseEvent "
    "MetricEvent TaskEvent Event ComputeView NodeView PhaseView TaskView EventCallback"
).split()
EVENT_REASON = f"{NO_DAEMON}. Watch a pool with compute.stats() or `migpool top`; sky.emit() logs to 'migpool.events'"
REFUSED_EVENTS = {name: refused(name, EVENT_REASON) for name in EVENTS}
# each by its name, as type checkers and `from skyward import ComputeReady` see it
ComputeCreated = REFUSED_EVENTS["ComputeCreated"]
ComputeBound = REFUSED_EVENTS["ComputeBound"]
ComputeAdopted = REFUSED_EVENTS["ComputeAdopted"]
ComputeProvisioning = REFUSED_EVENTS["ComputeProvisioning"]
ComputeReady = REFUSED_EVENTS["ComputeReady"]
ComputeDegraded = REFUSED_EVENTS["ComputeDegraded"]
GenerationCreated = REFUSED_EVENTS["GenerationCreated"]
GenerationApplied = REFUSED_EVENTS["GenerationApplied"]
LeaseClaimed = REFUSED_EVENTS["LeaseClaimed"]
LeaseReleased = REFUSED_EVENTS["LeaseReleased"]
ComputeAbandoned = REFUSED_EVENTS["ComputeAbandoned"]
ComputeDeleting = REFUSED_EVENTS["ComputeDeleting"]
ComputeDeletionFailed = REFUSED_EVENTS["ComputeDeletionFailed"]
StraysTerminated = REFUSED_EVENTS["StraysTerminated"]
ComputeDeleted = REFUSED_EVENTS["ComputeDeleted"]
CostEvent = REFUSED_EVENTS["CostEvent"]
NodeEvent = REFUSED_EVENTS["NodeEvent"]
ProgressEvent = REFUSED_EVENTS["ProgressEvent"]
ConsoleEvent = REFUSED_EVENTS["ConsoleEvent"]
EmittedEvent = REFUSED_EVENTS["EmittedEvent"]
PhaseEvent = REFUSED_EVENTS["PhaseEvent"]
MetricEvent = REFUSED_EVENTS["MetricEvent"]
TaskEvent = REFUSED_EVENTS["TaskEvent"]
Event = REFUSED_EVENTS["Event"]
ComputeView = REFUSED_EVENTS["ComputeView"]
NodeView = REFUSED_EVENTS["NodeView"]
PhaseView = REFUSED_EVENTS["PhaseView"]
TaskView = REFUSED_EVENTS["TaskView"]
EventCallback = REFUSED_EVENTS["EventCallback"]


class Lambda(Cloud):
    """The reference system's Lambda provider (refuses)."""

    cloud = "Lambda Cloud"


class Salad(Cloud):
    """The reference system's Salad provider (refuses)."""

    cloud = "Salad"


Provider = Cloud  # the base of the reference's providers

# the reference's state names, as types
ComputeState = Literal["requested", "provisioning", "ready", "degraded", "deleting", "deleted"]
NodeState = Literal[
    "requested",
    "provisioning",
    "connecting",
    "bootstrapping",
    "ready",
    "draining",
    "lost",
    "deleting",
    "deleted",
    "failed",
]
TaskState = Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out", "indeterminate"]
Consistency = Literal["strong", "eventual"]


# Compute's keywords of the reference that choose, reach or watch cloud machines (Skyward 0.12.1's signature)
COMPUTE_CLOUD_KEYWORDS = {
    "region": "it chooses a cloud region; a Local pool runs on this machine, a Ray pool on its cluster's nodes",
    "allocation": "it chooses spot or on-demand cloud machines",
    "selection": "it chooses among cloud offers by price",
    "volumes": "it mounts object-store buckets on cloud nodes; read files from where the pool runs",
    "ports": "it bridges ports of cloud nodes; a Local pool's workers listen on this machine",
    "ttl": "it ends idle cloud machines; elastic nodes scale down with Options(autoscale_idle_timeout=...)",
    "url": NO_DAEMON,
    "database": NO_DAEMON,
    "delete_on_exit": NO_DAEMON,
    "callbacks": NO_DAEMON + "; watch a pool with compute.stats() or `migpool top`",
    "attach": NO_DAEMON,
    "retry": "give each task its policy: @function(retry=Retry(...)) or task.with_retry(...)",
}


def refuse_compute_keywords(given: dict[str, Any]) -> None:
    """Refuse, in one line, the first of the reference's cloud keywords given to Compute; a keyword neither
    language knows is Python's own TypeError."""
    for key in given:
        if key in COMPUTE_CLOUD_KEYWORDS:
            raise ReferenceOnlyError(f"migpool's Compute has no {key}=: {COMPUTE_CLOUD_KEYWORDS[key]}")
        raise TypeError(f"Compute() got an unexpected keyword argument {key!r}")
