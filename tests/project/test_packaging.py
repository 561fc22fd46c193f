"""The CI's lowest-versions pass installs exactly the lower bounds that pyproject.toml declares."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def test_lowest_pins_are_the_declared_lower_bounds():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if lows:
            declared[req.name.lower()] = lows[0]
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower()] = spec.version
    assert set(pins) == set(declared)
    for name, low in declared.items():
        # a bound such as nvidia-ml-py>=12.535 is met first by the release 12.535.77
        assert pins[name] == low or pins[name].startswith(low + "."), (name, pins[name], low)
