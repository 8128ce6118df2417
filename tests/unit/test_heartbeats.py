"""Which backend heartbeats the master checks with a verification publish
(``_utils/openstack_ha_remediate.py``), and the HAProxy states a heartbeat carries
(``_beacons/openstack_ha_backends.py``). The heartbeat path runs in the lab as well
(``bench/loop_cost.py``: a backend down and drained costs each controller no job per
heartbeat)."""

import pytest

from tests.conftest import load_module

remediate = load_module("_utils/openstack_ha_remediate.py", "openstack_ha_remediate")
context = load_module("_utils/openstack_ha_context.py", "openstack_ha_context")
beacon = load_module("_beacons/openstack_ha_backends.py", "openstack_ha_backends")

MODEL = {"site": "lab"}
UP = {"nova/c1": "up", "nova/c2": "up", "nova/c3": "up"}
C3_DOWN = dict(UP, **{"nova/c3": "down"})
LOOP_DRAIN = {"state": "drain", "by": "remediation", "time": 1.0}


def needs_work(records, data):
    ctx = context.Context({"id": "master"}, {"openstack_ha_records.load": lambda ctx, site: {"backends": records}}, {})
    return remediate.heartbeat_needs_work(ctx, MODEL, data)


def heartbeat(view, admin=None):
    data = {"kind": "heartbeat", "view": view, "time": 1.0}
    if admin is not None:
        data["admin"] = admin
    return data


def test_all_up_and_nothing_drained_needs_nothing():
    assert needs_work({}, heartbeat(UP)) is False


@pytest.mark.parametrize("admin", ["drain", "maint"])
def test_down_and_drained_on_the_reporters_haproxy_needs_nothing(admin):
    assert needs_work({"nova/c3": LOOP_DRAIN}, heartbeat(C3_DOWN, {"nova/c3": admin})) is False
    operator = {"state": "drain", "by": "operator", "time": 1.0}
    assert needs_work({"nova/c3": operator}, heartbeat(C3_DOWN, {"nova/c3": admin})) is False


def test_down_and_not_recorded_drained_is_checked():
    # A change event lost, or a drain refused (the last backend) that may be possible now.
    assert needs_work({}, heartbeat(C3_DOWN, {"nova/c3": "drain"})) is True
    assert needs_work({"nova/c3": {"state": "ready", "by": "remediation", "time": 1.0}},
                      heartbeat(C3_DOWN, {"nova/c3": "ready"})) is True


def test_a_drain_the_reporters_haproxy_lost_is_checked():
    # HAProxy restarted without its state file: recorded drained, serving again here.
    assert needs_work({"nova/c3": LOOP_DRAIN}, heartbeat(C3_DOWN, {"nova/c3": "ready"})) is True
    assert needs_work({"nova/c3": LOOP_DRAIN}, heartbeat(C3_DOWN, {"nova/c3": "absent"})) is True


def test_without_haproxy_states_every_backend_down_is_checked():
    # An older beacon, or one whose HAProxy did not answer: checked as before.
    assert needs_work({"nova/c3": LOOP_DRAIN}, heartbeat(C3_DOWN)) is True
    assert needs_work({"nova/c3": LOOP_DRAIN}, dict(heartbeat(C3_DOWN), admin="drain")) is True


def test_a_loop_drain_reported_up_or_not_reported_is_checked_for_a_restore():
    assert needs_work({"nova/c3": LOOP_DRAIN}, heartbeat(UP)) is True
    assert needs_work({"glance/c3": LOOP_DRAIN}, heartbeat(UP)) is True
    # An operator's drain is the operator's to undo.
    assert needs_work({"nova/c3": {"state": "drain", "by": "operator", "time": 1.0}}, heartbeat(UP)) is False


def test_no_view_is_checked():
    assert needs_work({}, {"kind": "heartbeat", "view": None}) is True


def test_the_heartbeat_carries_this_haproxys_state_of_the_backends_it_sees_down(monkeypatch):
    servers = {"nova/c1": "ready", "nova/c2": "ready", "nova/c3": "drain"}
    asked = []

    def read(socket):
        asked.append(socket)
        return servers
    monkeypatch.setattr(beacon, "__salt__", {"openstack_ha_haproxy.admin_states": read}, raising=False)
    conf = {"socket": "/run/haproxy/admin.sock"}
    assert beacon._admin_of_down(conf, C3_DOWN) == {"nova/c3": "drain"}
    assert beacon._admin_of_down(conf, dict(C3_DOWN, **{"glance/c9": "down"})) == {"nova/c3": "drain", "glance/c9": "absent"}
    assert len(asked) == 2
    assert beacon._admin_of_down(conf, UP) is None and len(asked) == 2, "HAProxy asked with nothing down"
    assert beacon._admin_of_down({}, C3_DOWN) is None

    def broken(socket):
        raise OSError("no such socket")
    monkeypatch.setattr(beacon, "__salt__", {"openstack_ha_haproxy.admin_states": broken}, raising=False)
    assert beacon._admin_of_down(conf, C3_DOWN) is None
