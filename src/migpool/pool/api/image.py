"""`Image(pip=[...], env={...})`: what the worker interpreter needs. Nothing is installed when the
current interpreter already satisfies it; otherwise a cached virtual environment is built for it."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import migpool

from ...errors import ImageError
from ...host.locks import PathLock


@dataclass(frozen=True)
class PipIndex:
    """An extra package index for Image(pip_indexes=): `url`, and the packages to take from it (the reference's
    fields; here the index is offered to the installer for every package, as pip's --extra-index-url)."""

    url: str
    packages: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.packages, str):
            object.__setattr__(self, "packages", (self.packages,))


# the reference's Image fields that describe a cloud machine, with the value that asks nothing of migpool
NOT_HERE: dict[str, tuple[Any, str]] = {
    "base": (None, "migpool starts no containers or machine images: the workers run on this machine's system"),
    "apt": ((), "migpool installs no system packages: install them on the machine (apt-get) before the pool starts"),
    "shell_vars": ({}, "give the values in env= (computed in the script, e.g. with subprocess.run)"),
    "includes": ((), "the workers import from this machine's files: put the paths on PYTHONPATH (env=)"),
    "excludes": ((), "the workers see this machine's files as they are; nothing is uploaded"),
    "metrics": (None, "migpool's telemetry reads the GPUs itself: `migpool top`, or Compute(metrics_port=...)"),
    "warm": (False, "a warm boot image is a cloud machine image; the workers' environment is cached here anyway"),
    "mutable": (False, "a pool's Image is fixed while it is open; open a new Compute to change it"),
}


@dataclass(frozen=True)
class Image:
    """Packages (pip requirement strings) and environment variables for the workers, with the reference's other
    fields: `python` (None, or this interpreter's version), `pip_indexes` (PipIndex or URL), `bootstrap_timeout`
    and `skyward` are taken; the cloud ones (`base`, `apt`, `shell_vars`, `includes`, `excludes`, `metrics`,
    `warm`, `mutable`) are refused unless left at their defaults, with what to do instead."""

    pip: tuple[str, ...] | list[str] = field(default_factory=tuple)
    env: dict[str, str] = field(default_factory=dict)
    python: str | None = None
    pip_indexes: Sequence[PipIndex | str] = ()
    bootstrap_timeout: float = 900
    skyward: str = "auto"
    base: Any = None
    apt: Sequence[str] = ()
    shell_vars: dict[str, str] = field(default_factory=dict)
    includes: Sequence[str] = ()
    excludes: Sequence[str] = ()
    metrics: Any = None
    warm: bool = False
    mutable: bool = False

    def __post_init__(self) -> None:
        for name in ("pip", "apt", "pip_indexes", "includes", "excludes"):
            if isinstance(getattr(self, name), (str, PipIndex)):  # one value: a 1-tuple, as the reference takes it
                object.__setattr__(self, name, (getattr(self, name),))
        for name, (default, instead) in NOT_HERE.items():
            value = getattr(self, name)
            if value != default and not (default == () and not value):
                raise ImageError(f"Image({name}={value!r}): {instead}")
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if self.python not in (None, "auto", here):
            raise ImageError(
                f"Image(python={self.python!r}): the workers run this interpreter, Python {here}; run the script "
                f"with Python {self.python} (or leave python= out)"
            )

    def index_urls(self) -> list[str]:
        return [i.url if isinstance(i, PipIndex) else str(i) for i in self.pip_indexes]

    def missing(self) -> list[str]:
        """The requirements the current interpreter does not satisfy."""
        if not self.pip:
            return []
        from importlib import metadata  # (imported here: most pools ask for nothing)

        from packaging.requirements import InvalidRequirement, Requirement

        out = []
        for req in self.pip:
            try:
                r = Requirement(req)
            except InvalidRequirement:
                out.append(req)  # a path or URL: only an install can satisfy it
                continue
            if r.marker is not None and not r.marker.evaluate():
                continue
            try:
                have = metadata.version(r.name)
            except metadata.PackageNotFoundError:
                out.append(req)
                continue
            if r.specifier and not r.specifier.contains(have, prereleases=True):
                out.append(req)
        return out

    def key(self) -> str:
        text = json.dumps([sys.version, sys.executable, sorted(self.pip), *self.index_urls()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def interpreter(self, progress: bool = True) -> str:
        """The interpreter the workers run: this one, or a cached venv with the missing packages."""
        if not self.missing():
            return sys.executable
        from platformdirs import user_cache_dir

        cache = os.environ.get("MIGPOOL_CACHE_DIR") or user_cache_dir("migpool")
        root = Path(os.environ.get("MIGPOOL_IMAGE_DIR") or Path(cache) / "images") / self.key()
        py = root / "bin" / "python"
        root.parent.mkdir(parents=True, exist_ok=True)
        with PathLock(str(root) + ".lock"):
            if (root / ".migpool-ready").exists() and py.exists():
                return str(py)
            shutil.rmtree(root, ignore_errors=True)
            if progress:
                print(
                    f"migpool: building the workers' environment: installing {', '.join(self.missing())} into "
                    f"{root} ($MIGPOOL_IMAGE_DIR, else $MIGPOOL_CACHE_DIR/images); packages such as torch take "
                    "minutes and several GB. Once built, it is reused.",
                    file=sys.stderr,
                )
            self._build(root, py, progress)
            (root / ".migpool-ready").write_text(json.dumps(list(self.pip)))
            if progress:
                size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
                print(f"migpool: worker environment ready: {root} ({size / 2**20:,.0f} MiB)", file=sys.stderr)
        return str(py)

    def _build(self, root: Path, py: Path, progress: bool = False) -> None:
        indexes = [a for url in self.index_urls() for a in ("--extra-index-url", url)]
        uv = shutil.which("uv")
        if uv:
            steps = [
                [uv, "venv", "--quiet", "--python", sys.executable, str(root)],
                [uv, "pip", "install", "--python", str(py), *indexes, *self.pip],
            ]
        else:
            steps = [
                [sys.executable, "-m", "venv", str(root)],
                [str(py), "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check", *indexes]
                + list(self.pip),
            ]
        for i, argv in enumerate(steps):
            if i == 1:
                self._link_parent(root, py)
            lines: collections.deque[str] = collections.deque(maxlen=15)
            with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:  # pip's own progress, line by line, as it comes
                    lines.append(line.rstrip())
                    if progress and i == len(steps) - 1 and line.strip():
                        print(f"migpool: pip: {line.rstrip()}", file=sys.stderr, flush=True)
            if proc.returncode != 0:
                shutil.rmtree(root, ignore_errors=True)
                tail = "\n  ".join(lines)
                raise ImageError(
                    f"installing {list(self.pip)} for the workers failed ({Path(argv[0]).name} exit "
                    f"{proc.returncode}):\n  {tail}"
                )

    def _link_parent(self, root: Path, py: Path) -> None:
        """Make migpool and this interpreter's packages importable in the venv, after its own packages."""
        site = subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        paths = {
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
            str(Path(migpool.__file__).resolve().parents[1]),
        }
        Path(site, "_migpool_parent.pth").write_text("\n".join(sorted(paths)) + "\n")
