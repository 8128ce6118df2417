"""The lab as a pytest fixture: brought up once per session, torn down after, also on failure."""

import pytest

from lab import labctl
from tests.integration import labtools


@pytest.fixture(scope="session")
def lab():
    labctl.down()  # whatever an earlier crashed run left behind
    try:
        labctl.up()
        yield labctl
    finally:
        labctl.down()


@pytest.fixture(scope="session")
def applied(lab):
    """The lab after `salt '*ctrl*' state.apply openstack_ha` succeeded on every controller."""
    rc, result = labtools.apply("*ctrl*")
    assert rc == 0, result
    assert sorted(result) == labtools.CTRLS
    return result
