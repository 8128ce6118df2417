"""openstack_ha.capable: a capability read from a process's status file."""

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_module

oha = load_module("_modules/openstack_ha.py", "openstack_ha_execution")


def status(tmp_path, capeff):
    path = tmp_path / "status"
    path.write_text("Name:\tsalt-minion\nCapInh:\t0000000000000000\nCapEff:\t{}\nCapBnd:\t000001ffffffffff\n".format(capeff))
    return str(path)


def test_a_container_without_sys_resource(tmp_path):
    path = status(tmp_path, "000001fffeffffff")  # what this project's CI machine grants root
    assert oha.capable("sys_resource", path) is False
    assert oha.capable("sys_nice", path) is True and oha.capable("net_admin", path) is True


def test_a_host_with_every_capability(tmp_path):
    assert oha.capable("sys_resource", status(tmp_path, "000001ffffffffff")) is True


def test_this_process_can_be_asked():
    assert isinstance(oha.capable("sys_resource"), bool)


def test_an_unknown_capability_or_an_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandExecutionError, match="unknown capability 'sys_admin'"):
        oha.capable("sys_admin")
    with pytest.raises(CommandExecutionError, match="cannot read this process's capabilities"):
        oha.capable("sys_resource", str(tmp_path / "missing"))
    with pytest.raises(CommandExecutionError, match="has no CapEff line"):
        oha.capable("sys_resource", str(tmp_path / "status" if (tmp_path / "status").write_text("Name:\tx\n") else ""))
