"""migpool.mig.catalog: a damaged user catalog is refused; a regression that once broke migpool (issue 22)."""

from __future__ import annotations

import pytest
from damaged_files import DAMAGE
from migpool_cli import one_error_line as _one_error_line
from migpool_cli import run as _cli


@pytest.mark.parametrize("damage", [*DAMAGE, "wrong types"])
def test_a_damaged_user_catalog_is_refused(monkeypatch, tmp_path, damage):
    import os

    path = tmp_path / "config" / "catalog.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"models": [1]}' if damage == "wrong types" else DAMAGE[damage])
    _one_error_line(_cli("catalog", env=dict(os.environ)), path)
