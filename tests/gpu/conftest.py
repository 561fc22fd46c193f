import pytest


@pytest.fixture(autouse=True)
def _read_only(monkeypatch):
    """Hardware tests run read-only, always: migpool refuses every change to the GPU."""
    monkeypatch.setenv("MIGPOOL_READ_ONLY", "1")
    monkeypatch.delenv("MIGPOOL_SIMULATE", raising=False)
