"""One Prefect test harness (a temporary local API + database) for every flow test in tests/flows.

Starting it costs several seconds, so it is session-scoped and requested by name."""
import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
