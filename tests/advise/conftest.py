import pytest

from migpool.observe import workload


@pytest.fixture(autouse=True)
def _fresh_record():
    """Each test's environment (its cache dir, MIGPOOL_RECORD) is read anew: no recorder outlives a test."""
    workload.close_all()
    yield
    workload.close_all()
