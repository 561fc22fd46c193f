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


if __name__ == "__main__":
    for v in sys.argv[1:]:
        if not (ROOT / ".ci-cache" / name(v)).is_file():
            print("fetched", fetch(v, ROOT / ".ci-cache"))
