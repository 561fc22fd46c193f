"""One NVML session, shared by the NVML backend's driver control and telemetry: the library opened once,
NVML errors turned into migpool errors with clear messages, GPU handles by index."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from ...errors import (
    BackendError,
    InsufficientResourcesError,
    InUseError,
    InvalidArgumentError,
    NoPermissionError,
    NotFoundError,
    NotSupportedError,
    ResetRequiredError,
)

T = TypeVar("T")


def decode(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def error_code(e: Exception) -> Any:
    """The NVML return code an NVMLError carries."""
    return getattr(e, "value", None)


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"pid {pid}"


class NvmlSession:
    """NVML, opened in `__init__` and shut down by `close`. `nvml` may be a stand-in module with pynvml's API
    (tests use one). The control and telemetry classes build on it, each opening its own state after it."""

    kind = "nvml"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        if nvml is None:
            try:
                import pynvml
            except ImportError as e:  # pragma: no cover - dependency is declared
                raise NotSupportedError("nvidia-ml-py is not installed; pip install nvidia-ml-py") from e
            nvml = pynvml
        self.nvml: Any = nvml  # pynvml has no type information: its calls are checked by the fake's tests
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            raise NotSupportedError(
                f"cannot talk to an NVIDIA driver here (NVML: {e}). On a machine without NVIDIA GPUs, simulate one: "
                "--simulate A100-80GB, MIGPOOL_SIMULATE=A100-80GB, or Local(simulate='A100-80GB')"
            ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()

    # --- error mapping ---
    def _map(self, err: Exception, what: str) -> BackendError:
        n = self.nvml
        code = error_code(err)
        table: dict[Any, tuple[type[BackendError], str]] = {
            n.NVML_ERROR_NOT_FOUND: (NotFoundError, "not found"),
            n.NVML_ERROR_IN_USE: (InUseError, "in use"),
            n.NVML_ERROR_INSUFFICIENT_RESOURCES: (InsufficientResourcesError, "insufficient resources"),
            n.NVML_ERROR_NO_PERMISSION: (
                NoPermissionError,
                "no permission: run as root, or grant access to the MIG capability devices (/dev/nvidia-caps)",
            ),
            n.NVML_ERROR_RESET_REQUIRED: (ResetRequiredError, "a GPU reset is required first"),
            n.NVML_ERROR_NOT_SUPPORTED: (NotSupportedError, "not supported by this GPU or driver"),
            n.NVML_ERROR_INVALID_ARGUMENT: (InvalidArgumentError, "invalid argument"),
        }
        cls, text = table.get(code, (BackendError, "NVML error"))
        return cls(f"{what}: {text} (NVML: {err})")

    def _wrap(self, fn: Callable[..., T], *args: Any, what: str = "") -> T:
        try:
            return fn(*args)
        except self.nvml.NVMLError as e:
            raise self._map(e, what or getattr(fn, "__name__", "NVML call")) from None

    def _handle(self, gpu: int) -> Any:
        return self._wrap(self.nvml.nvmlDeviceGetHandleByIndex, gpu, what=f"GPU {gpu}")

    def _uuid_index(self) -> dict[str, int]:
        """Each GPU's index by its UUID."""
        n = self.nvml
        count = self._wrap(n.nvmlDeviceGetCount)
        return {decode(self._wrap(n.nvmlDeviceGetUUID, self._handle(i))): i for i in range(count)}
