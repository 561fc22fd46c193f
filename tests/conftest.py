import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own simulated machines and no inherited migpool settings."""
    from migpool.mig import catalog

    monkeypatch.setenv("MIGPOOL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MIGPOOL_CONFIG_DIR", str(tmp_path / "config"))  # an empty user catalog
    monkeypatch.setenv("MIGPOOL_CACHE_DIR", str(tmp_path / "cache"))  # no run times learned by other tests
    monkeypatch.setenv("MIGPOOL_RUNTIME_DIR", str(tmp_path / "run"))  # real-GPU backends' locks and leases
    monkeypatch.setenv("MIGPOOL_DATA_DIR", str(tmp_path / "lib"))  # and their journal, never the machine's
    for var in ("MIGPOOL_READ_ONLY", "MIGPOOL_SIMULATE"):
        monkeypatch.delenv(var, raising=False)
    catalog.reload()
    yield
    catalog.reload()


@pytest.fixture
def sim():
    from migpool import SimulatedBackend

    def make(spec="A100-80GB"):
        return SimulatedBackend(spec)

    return make


def pytest_collection_modifyitems(config, items):
    """The gpu marker: skip cleanly where no NVIDIA GPU is present."""
    try:
        import pynvml

        pynvml.nvmlInit()
        has_gpu = pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no library, no device: all mean no GPU here
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (NVML found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
