import pytest

from otelflow.testing.process import free_port


@pytest.fixture
def port():
    return free_port()
