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


class WorkerLostError(MigpoolError):
    """The worker process running a task died before answering."""


class RemoteError(MigpoolError):
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


class TaskTimeoutError(MigpoolError, TimeoutError):
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
