"""The loop's Prometheus metrics, as prometheus_client exposes them."""

import prometheus_client
import pytest

from tests.conftest import load_module

metrics_lib = load_module("_utils/openstack_ha_metrics.py", "openstack_ha_metrics")


def exposed(m):
    return prometheus_client.generate_latest(m.registry).decode()


def test_events_decisions_and_latencies_are_counted():
    m = metrics_lib.loop_metrics()
    drain = {"what": "drain", "service": "nova", "backend": "c2", "timing": {"verify": 0.3, "act": 0.1}}
    m.observe("salt/beacon/c1/openstack_ha_backends/change", {"site": "lab", "decisions": [drain]}, 0.45, 1000.0)
    m.observe("salt/beacon/c9/openstack_ha_backends/heartbeat", {"ignored": "'c9' is not a controller"}, 0.01, 1001.0)
    text = exposed(m)
    assert 'openstack_ha_decisions_total{kind="nova",site="lab",what="drain"} 1.0' in text
    assert 'openstack_ha_loop_events_total{beacon="openstack_ha_backends",kind="change"} 1.0' in text
    assert 'openstack_ha_loop_ignored_total{beacon="openstack_ha_backends"} 1.0' in text
    assert 'openstack_ha_loop_verify_seconds_bucket{le="0.5"} 1.0' in text
    assert "openstack_ha_loop_last_event_timestamp_seconds 1001.0" in text
    # An ignored event does not count as its controller's sign of life.
    assert 'openstack_ha_controller_last_event_timestamp_seconds{beacon="openstack_ha_backends",controller="c1",site="lab"} 1000.0' in text
    assert 'controller="c9"' not in text


def test_open_alerts_are_a_gauge_that_drops_to_zero():
    m = metrics_lib.loop_metrics()
    m.set_firing({("lab", "backend_drained"): 2})
    m.set_firing({})
    assert 'openstack_ha_alerts_firing{kind="backend_drained",site="lab"} 0.0' in exposed(m)


def test_the_listen_address_is_checked():
    assert metrics_lib.split_listen("[fd00::1]:9387") == ("fd00::1", 9387)
    assert metrics_lib.split_listen("10.0.0.1:9387") == ("10.0.0.1", 9387)
    with pytest.raises(ValueError, match="expected ADDRESS:PORT"):
        metrics_lib.split_listen("9387")


def test_vip_holders_follow_the_loops_authenticated_look():
    m = metrics_lib.loop_metrics()
    m.observe("salt/beacon/c1/openstack_ha_vip/change", {"site": "lab", "decisions": [], "vip_holders": {"public": ["c1"]}}, 0.2, 5.0)
    m.observe("salt/beacon/c2/openstack_ha_vip/change", {"site": "lab", "decisions": [], "vip_holders": {"public": ["c2"]}}, 0.2, 6.0)
    text = exposed(m)
    assert 'openstack_ha_vip_held{controller="c1",site="lab",vip="public"} 0.0' in text
    assert 'openstack_ha_vip_held{controller="c2",site="lab",vip="public"} 1.0' in text
    assert 'openstack_ha_vip_holders{site="lab",vip="public"} 1.0' in text


def test_the_site_gauges_follow_the_status():
    m = metrics_lib.loop_metrics()
    m.observe_status({"lab": {"healthy": False, "problems": ["x", "y"], "catalog": {"ok": False, "drift": {"nova/public": {}}},
                              "pending_restart": {"c2": {"galera": ["/etc/mysql/x.cnf"]}}, "paused": {"reason": "r"}}})
    text = exposed(m)
    assert 'openstack_ha_site_healthy{site="lab"} 0.0' in text and 'openstack_ha_site_problems{site="lab"} 2.0' in text
    assert 'openstack_ha_catalog_drift{site="lab"} 1.0' in text and 'openstack_ha_site_paused{site="lab"} 1.0' in text
    assert 'openstack_ha_pending_restart{component="galera",controller="c2",site="lab"} 1.0' in text
    m.observe_status({"lab": {"healthy": True, "problems": [], "catalog": None}})
    text = exposed(m)
    assert 'openstack_ha_pending_restart{component="galera",controller="c2",site="lab"} 0.0' in text
    assert 'openstack_ha_site_healthy{site="lab"} 1.0' in text


def test_tags_a_minion_chooses_cannot_grow_the_label_sets():
    m = metrics_lib.loop_metrics()
    for i in range(50):
        m.observe("salt/beacon/c1/openstack_ha_x{}/k{}".format(i, i), {"ignored": "forged"}, 0.01, 1.0)
    text = exposed(m)
    assert 'openstack_ha_loop_events_total{beacon="other",kind="other"} 50.0' in text
    assert "openstack_ha_x" not in text and 'kind="k' not in text


def test_metrics_without_prometheus_client_say_what_is_missing(monkeypatch):
    # Salt 3006/3007 from pip do not bring prometheus_client: only a loop asked to serve
    # metrics needs it, and it is told which module and which option.
    from salt.exceptions import CommandExecutionError

    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)
    with pytest.raises(CommandExecutionError, match="prometheus_client.*no 'metrics' in the engine's options"):
        metrics_lib.loop_metrics()
