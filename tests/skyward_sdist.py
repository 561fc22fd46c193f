"""Skyward's source distributions, for the tests that run its guides: fetched as plain files from the package
index's simple page (PEP 503, which every mirror serves) and checked against the sha256 it lists. Nothing is
built (`pip download` of an sdist builds its build backend). `.ci/run` fetches them into .ci-cache/ first:

    python3 tests/skyward_sdist.py 0.10.0 0.12.1
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def name(version: str) -> str:
    return f"skyward-{version}.tar.gz"


def fetch(version: str, dest: Path) -> Path:
    """Download skyward-VERSION.tar.gz into the folder `dest`, checked against the index's sha256."""
    with urllib.request.urlopen(f"{INDEX}/skyward/", timeout=60) as r:
        page = r.read().decode()
    found = re.search(rf'href="([^"#]*/{re.escape(name(version))})#sha256=([0-9a-f]{{64}})"', page)
    if found is None:
        raise ValueError(f"{INDEX}/skyward/ lists no {name(version)}")
    url, digest = found.groups()
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{name(version)} does not match the sha256 the index lists")
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / (name(version) + ".part")
    part.write_bytes(data)
    return part.replace(dest / name(version))


def sdist(version: str) -> Path:
    """The source distribution: .ci-cache/, else the user's cache (fetched once); skips offline (fails in CI)."""
    import pytest

    ci = ROOT / ".ci-cache" / name(version)
    if ci.is_file():
        return ci
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "migpool-tests"
    if not (cache / name(version)).is_file():
        try:
            fetch(version, cache)
        except (OSError, ValueError) as e:
            if os.environ.get("CI"):
                pytest.fail(f"cannot download Skyward's guides ({name(version)}): {e!r}")
            pytest.skip(f"Skyward {version}'s guides are not here and could not be downloaded (offline?): {e!r}")
    return cache / name(version)


def guides(version: str, dest: Path) -> Path:
    """The guides (`guides/NN_name.py`) of Skyward `version`'s sdist, extracted flat into `dest`."""
    import tarfile

    with tarfile.open(sdist(version)) as tar:
        for m in tar.getmembers():
            if re.fullmatch(rf"skyward-{re.escape(version)}/guides/\d\d_\w+\.py", m.name):
                m.name = Path(m.name).name
                tar.extract(m, dest, filter="data")
    return dest


def ported(guides_dir: Path, guide: str) -> Path:
    """Guide `guide` of the folder `guides_dir` (from `guides`) as migpool runs it: `import skyward as sky` becomes
    `import migpool as sky` and each `provider=sky.X()` becomes `provider=sky.Local()`, the only lines the issue
    allows to change (every other line is Skyward's); written beside it as `migpool_<guide>.py`."""
    text = (guides_dir / f"{guide}.py").read_text()
    changed, n_import = re.subn(r"^import skyward as sky$", "import migpool as sky", text, flags=re.M)
    changed, n_provider = re.subn(r"provider=sky\.\w+\(\)", "provider=sky.Local()", changed)
    assert n_import == 1 and n_provider >= 1, f"{guide}: the guide's import or provider line was not where expected"
    path = guides_dir / f"migpool_{guide}.py"
    path.write_text(changed)
    return path


def run(path: Path, cwd: Path, timeout: float = 300, **env: str) -> str:
    """Run the script `path` in a fresh interpreter (pytest's variables left out, `env` added); its output, which
    must end with status 0."""
    import subprocess

    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    environ.update(env, PYTHONUNBUFFERED="1")
    got = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environ
    )
    assert got.returncode == 0, f"{path.name} exited {got.returncode}:\n{got.stdout[-2000:]}\n{got.stderr[-3000:]}"
    return got.stdout


if __name__ == "__main__":
    for v in sys.argv[1:]:
        if not (ROOT / ".ci-cache" / name(v)).is_file():
            print("fetched", fetch(v, ROOT / ".ci-cache"))
