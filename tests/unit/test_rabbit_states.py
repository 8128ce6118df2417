"""The RabbitMQ plugin state: the enabled-plugins file is the answer; ``rabbitmq-plugins``
runs only for a plugin the file does not list (Salt's ``rabbitmq.enable_plugin``, recorded here)."""

import pytest

from tests.conftest import load_module

state = load_module("_states/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_state")


@pytest.fixture
def salt(monkeypatch, tmp_path):
    enabled = []

    def enable(name):
        enabled.append(name)
        (tmp_path / "enabled_plugins").write_text("[rabbitmq_management_agent,{}].\n".format(name))
        return {"Enabled": ""}
    monkeypatch.setattr(state, "__salt__", {"rabbitmq.enable_plugin": enable}, raising=False)
    monkeypatch.setattr(state, "__opts__", {"test": False}, raising=False)
    return enabled


def test_a_listed_plugin_is_enabled_and_nothing_runs(salt, tmp_path):
    path = tmp_path / "enabled_plugins"
    path.write_text("[rabbitmq_management_agent,\n rabbitmq_prometheus].\n")
    ret = state.plugin_enabled("rabbitmq_prometheus", str(path))
    assert ret["result"] is True and ret["changes"] == {} and salt == []


@pytest.mark.parametrize("content", [None, "[].\n", "[rabbitmq_prometheus_extra].\n"])
def test_an_unlisted_plugin_is_enabled_once_and_reported(salt, tmp_path, content):
    path = tmp_path / "enabled_plugins"
    if content is not None:
        path.write_text(content)
    state.__opts__["test"] = True
    ret = state.plugin_enabled("rabbitmq_prometheus", str(path))
    assert ret["result"] is None and ret["changes"] == {"rabbitmq_prometheus": "enable"} and salt == []
    state.__opts__["test"] = False
    ret = state.plugin_enabled("rabbitmq_prometheus", str(path))
    assert ret["result"] is True and ret["changes"] == {"rabbitmq_prometheus": "enabled"} and salt == ["rabbitmq_prometheus"]
    assert state.plugin_enabled("rabbitmq_prometheus", str(path))["changes"] == {}


def test_a_failed_rabbitmqctl_is_told_by_its_error_and_its_diagnosis():
    text = load_module("_modules/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_module")._failure_text
    down = ("Error: unable to perform an operation on node 'rabbit@c3'. Please see diagnostics information and suggestions below.\n\n"
            "Most common reasons for this are:\n\n * Target node is not running\n\nDIAGNOSTICS\n===========\n\n"
            "attempted to contact: [rabbit@c3]\n\nrabbit@c3:\n  * unable to connect to epmd (port 4369) on c3: nxdomain (non-existing domain)\n\n\n"
            "Current node details:\n * node name: 'rabbitmqcli-892-rabbit@vm'\n")
    assert text(down) == ("Error: unable to perform an operation on node 'rabbit@c3'. Please see diagnostics information and suggestions below. "
                          "* unable to connect to epmd (port 4369) on c3: nxdomain (non-existing domain)")
    usage = "Error: {:badrpc, :timeout}\n\n\x1b[1mUsage\x1b[0m\n\nrabbitmqctl [--node <node>] [--longnames] [--quiet] cluster_status [--timeout <timeout>]\n"
    assert text(usage) == "Error: {:badrpc, :timeout}"
    assert text("one\ntwo\n\nthree\nfour\n") == "two three four"
    assert text("") == "no output"
    # Its message on the line after a bare "Error:": what tells a lost race for an account.
    assert text('Error:\nUser "openstack-ha-monitor" already exists\n') == 'Error: User "openstack-ha-monitor" already exists'

