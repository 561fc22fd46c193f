"""The simulated machine's state: one JSON file per simulated machine (under $MIGPOOL_STATE_DIR, else the user
cache dir), guarded by a file lock, so separate processes (CLI calls, pool workers) see the same GPUs. Its
driver control (control.py) and telemetry (telemetry.py) read and change it. A read never writes the file (a full
disk stops changes, never `migpool status`), and a wait for the lock is bounded: by the caller's
`locks.waits_bounded` (apply's --lock-timeout), else by $MIGPOOL_SIM_LOCK_TIMEOUT seconds (60)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from ...errors import BackendError, LockTimeoutError, NotFoundError
from ...host.locks import LockTimeout, PathLock, wait_bound
from ...host.proc import pid_alive
from ...host.safefiles import atomic_write
from ...mig import catalog
from ...mig.catalog import GpuModel

STATE_DIR_ENV = "MIGPOOL_STATE_DIR"
MAX_GPUS = 64  # the most GPUs one simulated machine has
LOCK_TIMEOUT_ENV = "MIGPOOL_SIM_LOCK_TIMEOUT"
LOCK_TIMEOUT_S = 60.0  # the longest a call waits for the state lock, unless its caller or the environment says


def lock_timeout() -> float:
    """$MIGPOOL_SIM_LOCK_TIMEOUT, else LOCK_TIMEOUT_S."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    try:
        return float(text) if text else LOCK_TIMEOUT_S
    except ValueError:
        raise BackendError(f"cannot read {LOCK_TIMEOUT_ENV}={text!r}; write a number of seconds, e.g. 30") from None


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or user_cache_dir("migpool"))


def parse_spec(spec: str) -> list[GpuModel]:
    """'A100-80GB', 'H100-80GB:4', 'A100-40GB,H100-80GB' -> the GPU models, in index order (at most
    MAX_GPUS in all)."""
    out: list[GpuModel] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, _, count = part.partition(":")
        if count and not count.isdigit():
            raise BackendError(f"cannot read simulated GPU spec {part!r}; write MODEL[:COUNT], e.g. 'H100-80GB:2'")
        if len(out) + (int(count) if count else 1) > MAX_GPUS:
            raise BackendError(
                f"simulated GPU spec {spec!r} asks for more than {MAX_GPUS} GPUs, the most a simulated machine has "
                "(NVIDIA's largest machines have 8 or 16)"
            )
        sizes = [m.key for m in catalog.models() if re.fullmatch(rf"{re.escape(name)}-\d+GB", m.key, re.I)]
        if len(sizes) > 1:  # a family name that several memory sizes share: which one is meant is not known
            raise BackendError(
                f"simulated GPU {name!r} is ambiguous: it is made as {' and '.join(sizes)}; name one, e.g. "
                f"--simulate {sizes[-1]} (or $MIGPOOL_SIMULATE={sizes[-1]})"
            )
        out.extend([catalog.lookup(name)] * (int(count) if count else 1))
    if not out:
        raise BackendError("empty simulated GPU spec; write MODEL[:COUNT][,MODEL…], e.g. 'A100-80GB' or 'H100-80GB:2'")
    return out


class SimulatedMachine:
    """The GPUs of `spec` (as for `--simulate`, e.g. 'H100-80GB:2') and their state file at `state_path` (by
    default one per spec under state_dir())."""

    def __init__(self, spec: str, state_path: str | os.PathLike[str] | None = None) -> None:
        self.spec = spec
        self.models = parse_spec(spec)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec) + "-" + hashlib.sha1(spec.encode()).hexdigest()[:6]
        self.path = Path(state_path) if state_path else state_dir() / f"sim-{slug}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = PathLock(str(self.path) + ".lock")
        self.lock_timeout = lock_timeout()

    # --- state file ---
    def _fresh(self) -> dict[str, Any]:
        seed = hashlib.sha1(self.spec.encode()).hexdigest()
        gpus = []
        for i, m in enumerate(self.models):
            u = uuidlib.UUID(hashlib.md5(f"{seed}:{i}".encode()).hexdigest())
            gpus.append(
                dict(
                    index=i,
                    model=m.key,
                    uuid=f"GPU-{u}",
                    mig_current=False,
                    mig_pending=False,
                    gis=[],
                    processes=[],
                    transient=[],
                    reset_blockers=[],
                )
            )
        return dict(spec=self.spec, ops=0, faults={}, transient_ops=0, gpus=gpus)

    @contextlib.contextmanager
    def _state(self, write: bool = False) -> Iterator[dict[str, Any]]:
        """The state, under its lock; saved when the block ends if `write` (never for a read)."""
        bound = wait_bound()
        wait = self.lock_timeout if bound is None else bound
        try:
            self._lock.acquire(wait)
        except LockTimeout as e:
            raise LockTimeoutError(
                f"the simulated GPUs' state lock {e.path} was held for over {wait:g}s by {e.who()}; the simulated "
                "driver does one thing at a time"
            ) from None
        try:
            st = self._load()
            try:
                yield st
            finally:
                if write:  # also after a refused operation: it counted, and a fired fault is spent
                    self._save(st)
        finally:
            self._lock.release()

    def _load(self) -> dict[str, Any]:
        """The saved state, a fresh machine if there is none; a damaged file is refused, never replaced."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._fresh()
        except OSError as e:
            raise BackendError(f"cannot read the simulated machine's state file {self.path}: {e}") from None
        except UnicodeDecodeError:
            text = "\0"  # not text: damaged, as below
        try:
            st = json.loads(text)
            if not isinstance(st, dict) or not isinstance(st.get("gpus"), list) or len(st["gpus"]) != len(self.models):
                raise ValueError(f"it does not describe the {len(self.models)} GPU(s) of {self.spec!r}")
            fresh = self._fresh()
            for g, want in zip(st["gpus"], fresh["gpus"], strict=True):
                if not isinstance(g, dict) or any(type(g.get(k)) is not type(v) for k, v in want.items()):
                    raise ValueError(f"its GPU entries lack fields or have the wrong types ({str(g)[:60]})")
        except ValueError as e:
            raise BackendError(
                f"the simulated machine's state file {self.path} is damaged ({e}); migpool will not guess what was on "
                f"its GPUs. Delete that file to start again from freshly booted simulated GPUs"
            ) from None
        return st

    def _save(self, st: dict[str, Any]) -> None:
        st.setdefault("booted", time.time())  # when the simulated GPUs began to draw power (their energy counters)
        atomic_write(self.path, json.dumps(st, indent=1), sync=False)  # a simulated machine: no fsync per call

    def _g(self, st: dict[str, Any], gpu: int) -> dict[str, Any]:
        if not 0 <= gpu < len(st["gpus"]):
            raise NotFoundError(f"no GPU with index {gpu}; this simulated machine has GPUs 0..{len(st['gpus']) - 1}")
        return st["gpus"][gpu]

    def _live_processes(self, g: dict[str, Any]) -> list[dict[str, Any]]:
        alive = [p for p in g["processes"] if pid_alive(p["pid"])]
        g["processes"] = alive
        return alive
