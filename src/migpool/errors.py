"""migpool's exceptions: every error migpool raises derives from MigpoolError."""

from __future__ import annotations

from collections.abc import Sequence


class MigpoolError(Exception):
    """Base class of every migpool error."""


class ProfileError(MigpoolError, ValueError):
    """A profile name or id that the GPU model does not have."""


class CatalogError(MigpoolError, LookupError):
    """A GPU model that the catalog does not know."""


class LayoutError(MigpoolError, ValueError):
    """A layout that is malformed or cannot fit on the GPU."""


class ConfigError(MigpoolError, ValueError):
    """A malformed mig-parted config file or layout string."""


class BackendError(MigpoolError):
    """A driver (NVML or simulated) call failed."""


class NotFoundError(BackendError):
    """The GPU, instance or device named does not exist."""


class InUseError(BackendError):
    """The resource is in use (processes, compute instances, a just-destroyed instance)."""


class InsufficientResourcesError(BackendError):
    """The GPU has no room for the instance at that placement."""


class NoPermissionError(BackendError):
    """The caller lacks the privilege (root or the MIG capability device)."""


class ResetRequiredError(BackendError):
    """A MIG mode change is pending until the GPU is reset."""


class NotSupportedError(BackendError):
    """The GPU or driver does not support the operation (e.g. no MIG)."""


class InvalidArgumentError(BackendError):
    """The driver rejected an argument (e.g. a placement that is not legal for the profile)."""


class LeasedError(InUseError):
    """A partition is leased by another holder (another pool, `migpool run`, dynamic MIG); `holder` says who."""

    def __init__(self, message: str, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder


class ReadOnlyError(BackendError):
    """A mutating call was refused because MIGPOOL_READ_ONLY is set."""


class ApplyError(MigpoolError):
    """Applying a layout failed; `state` says what was left on the GPUs."""

    def __init__(self, message: str, state: object = None) -> None:
        super().__init__(message)
        self.state = state


class UnsafeFileError(MigpoolError):
    """A state directory or file that another user could control (a symbolic link, a world-writable directory)."""


class DamagedFileError(MigpoolError, ValueError):
    """A file migpool keeps (the journal, a saved layout, the simulator's state, ...) is damaged: nothing changed."""


class LockTimeoutError(MigpoolError, TimeoutError):
    """Another migpool process (or thread) held a GPU's apply lock for too long."""


class SkywardError(MigpoolError):
    """The reference system's base error (Skyward 0.11+), with its attributes: `code` (a short word), `message`,
    `retryable` and `details` (a dict)."""

    code = "error"
    retryable = False

    def __init__(self, *args: object, details: dict[str, object] | None = None) -> None:
        super().__init__(*args)
        if details:
            self.details = dict(details)

    # (kept in the instance's __dict__ under their own names: a task's exception class rebuilt with this one as
    # a base may set them itself)
    @property
    def message(self) -> str:
        return str(self.__dict__.get("message", self.args[0] if self.args else ""))

    @message.setter
    def message(self, value: str) -> None:
        self.__dict__["message"] = value

    @property
    def details(self) -> dict[str, object]:
        got = self.__dict__.get("details")
        return got if isinstance(got, dict) else {}

    @details.setter
    def details(self, value: dict[str, object]) -> None:
        self.__dict__["details"] = value


class TaskFailedError(SkywardError):
    """A task failed: its function raised (the exception comes back as its own class too, see RemoteError), or it
    ran past its timeout, or it waited past its queue timeout."""

    code = "task_failed"


class TaskIndeterminateError(SkywardError):
    """A task's outcome was lost: nobody knows whether its function ran (migpool's case: WorkerLostError, a worker
    that died while running the task)."""

    code = "task_indeterminate"


class WorkerLostError(TaskIndeterminateError):
    """The worker process running a task died before answering (whether the task did its work is unknown: the
    reference's TaskIndeterminateError); also raised when a pool's worker cannot start."""


class ReferenceOnlyError(MigpoolError, NotImplementedError):
    """A name of the reference system (Skyward) that has no meaning on migpool's machines (a cloud, an object
    store, the reference's control-plane daemon): the message says what to use instead."""


class QueueTimeoutError(TaskFailedError, TimeoutError):
    """A task waited longer than its queue_timeout for a worker to start it: it never ran."""

    code = "queue_timeout"


class RemoteError(TaskFailedError):
    """A task's exception that could not come back as itself (its class cannot be imported here); a class
    that can is derived from both its own class and this one, so `except ItsClass:` catches it."""


class TaskExitError(MigpoolError):
    """A task called sys.exit() or raised KeyboardInterrupt: the task failed, the caller's program goes on."""

    code: object = None


class WorkerStartError(MigpoolError):
    """A worker could not start (three times in a row): the tasks it would have run fail with this, its output."""


class PoolBrokenError(MigpoolError):
    """One of the pool's own threads died of an error: the pool can run no more tasks (the cause is attached)."""


class PluginError(MigpoolError):
    """A plugin was configured in a way that cannot work."""


class ImageError(MigpoolError):
    """Building the worker environment of an Image failed."""


class TaskTimeoutError(TaskFailedError, TimeoutError):
    """A task ran past its timeout and its worker was stopped."""


class EstimateWarning(UserWarning):
    """An answer rests on a catalog figure that is an estimate, not read from such a GPU (`models`: their keys)."""

    def __init__(self, message: str, models: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.models = models


def listed(names: Sequence[str], shown: int = 10) -> str:
    """Names for a message, the first `shown` of them: "a, b, c … and 9,990 more" past that."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} … and {len(names) - shown:,} more"


_failed_classes: dict[type, type] = {}


def task_failed(e: BaseException) -> BaseException:
    """A task's exception as its caller gets it: still of its own class (`except ValueError:` catches it, as in
    the reference's 0.10) and now also a TaskFailedError (as the reference's 0.11+ raises); `e` itself where its
    class cannot take TaskFailedError as a second base."""
    cls = type(e)
    if isinstance(e, TaskFailedError) or not isinstance(e, Exception):
        return e
    derived = _failed_classes.get(cls)
    try:
        if derived is None:
            derived = type(cls.__name__, (cls, TaskFailedError), {"__str__": cls.__str__})
            derived.__module__, derived.__qualname__ = cls.__module__, cls.__qualname__
            _failed_classes[cls] = derived
    except TypeError:  # a layout that cannot be combined with TaskFailedError's
        return e
    try:
        e.__class__ = derived  # (a class defined in Python)
        return e
    except TypeError:  # a built-in class (ValueError, KeyError, ...): a copy of the derived class
        pass
    try:
        copy = derived.__new__(derived, *e.args)
        copy.args = e.args
        copy.__dict__.update(vars(e))
    except Exception:  # noqa: BLE001 - one that cannot be copied comes back as it is
        return e
    copy.__cause__, copy.__context__, copy.__traceback__ = e.__cause__, e.__context__, e.__traceback__
    copy.__suppress_context__ = e.__suppress_context__
    return copy
