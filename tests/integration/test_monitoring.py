"""Metrics and alerts in the lab: HAProxy's exporter on every controller, the loop's metrics
on the master, and its alerts held by a real Alertmanager (Debian's, started by labctl)."""

import json
import os
import signal
import urllib.parse
import urllib.request

from lab import labctl
from tests.integration import labtools
from tests.integration.galera_tools import all_synced
from tests.integration.labtools import ADDRESS, ready_everywhere, sample, standin_pid, wait_until

LOOP_METRICS = "http://{}:{}/metrics".format(labctl.BRIDGE_ADDR, labctl.LOOP_METRICS_PORT)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def haproxy_up(on, service, server):
    text = get("http://{}:8405/metrics".format(ADDRESS[on]))
    return sample(text, "haproxy_server_status", proxy=service, server=server, state="UP")


def open_alerts(**labels):
    """The alerts Alertmanager holds open now whose labels include ``labels``."""
    query = urllib.parse.urlencode([("filter", '{}="{}"'.format(k, v)) for k, v in labels.items()] + [("active", "true")])
    alerts = json.loads(get("{}/api/v2/alerts?{}".format(labctl.ALERTMANAGER_URL, query)))
    return [a for a in alerts if a.get("status", {}).get("state") == "active"]


def targets_down():
    """The scrape targets Prometheus does not reach now: ``["job/controller"]``."""
    found = json.loads(get(labctl.PROMETHEUS_URL + "/api/v1/targets?state=active"))["data"]["activeTargets"]
    return sorted("{}/{}".format(t["labels"]["job"], t["labels"].get("controller", "master")) for t in found if t["health"] != "up")


def test_prometheus_scrapes_every_exporter_and_the_loop(applied):
    wait_until(lambda: not targets_down() or None, 60, "every target up (down now: {})".format(targets_down()), interval=1)
    for ctrl in labtools.CTRLS:
        text = get("http://{}:9104/metrics".format(ADDRESS[ctrl]))
        assert sample(text, "mysql_up") == 1.0 and sample(text, "mysql_global_status_wsrep_local_state") == 4.0, ctrl
        assert sample(text, "mysql_global_status_wsrep_cluster_status") == 1.0, ctrl
        assert "rabbitmq_identity_info" in get("http://{}:15692/metrics".format(ADDRESS[ctrl]))
        listening = labtools.sh(ctrl, "ss -Htln")
        for port in (8405, 9104, 15692):
            assert "%s:%d" % (ADDRESS[ctrl], port) in listening and "*:%d" % port not in listening, (ctrl, port, listening)
    credentials = labtools.sh("lab-ctrl1", "stat -c '%a %U' /etc/prometheus/openstack-ha-mysqld-exporter.cnf").split()
    assert credentials == ["600", "prometheus"], credentials


def test_a_stopped_galera_node_fires_the_galera_rule_until_it_is_back(applied):
    rc, result = labtools.salt("lab-ctrl3", "openstack_ha_galera.stop")
    assert rc == 0, result
    try:
        wait_until(lambda: open_alerts(alertname="GaleraNodeDown", controller="lab-ctrl3"), 90,
                   "Prometheus's GaleraNodeDown for lab-ctrl3 at Alertmanager", interval=1)
    finally:
        rc, result = labtools.salt("lab-ctrl3", "state.apply", "openstack_ha.galera", timeout=900)
        assert rc == 0, labtools.failed_states(result) or result
    wait_until(all_synced, 180, "three Synced Galera nodes")
    wait_until(lambda: not open_alerts(alertname="GaleraNodeDown", controller="lab-ctrl3"), 90, "GaleraNodeDown resolved", interval=1)


def test_every_controller_exports_haproxy_metrics_on_its_own_address(applied):
    for ctrl in labtools.CTRLS:
        assert haproxy_up(ctrl, "nova", "lab-ctrl1") == 1.0
    listening = labtools.sh("lab-ctrl1", "ss -Htln")
    assert "%s:8405" % ADDRESS["lab-ctrl1"] in listening and "0.0.0.0:8405" not in listening, listening


def test_a_crashed_backend_shows_in_the_metrics_and_alertmanager_holds_the_alert_until_it_is_back(remediating):
    labels = {"alertname": "OpenStackHABackendDrained", "site": "lab", "service": "nova", "backend": "lab-ctrl2"}
    drains_before = sample(get(LOOP_METRICS), "openstack_ha_decisions_total", site="lab", what="drain", kind="nova") or 0.0
    os.kill(standin_pid("lab-ctrl2", "nova"), signal.SIGKILL)
    try:
        wait_until(lambda: haproxy_up("lab-ctrl1", "nova", "lab-ctrl2") == 0.0, 30, "HAProxy's metrics to show nova/lab-ctrl2 not UP")
        wait_until(lambda: (sample(get(LOOP_METRICS), "openstack_ha_decisions_total", site="lab", what="drain", kind="nova") or 0)
                   > drains_before, 30, "the loop's drain counter to move")
        alert = wait_until(lambda: open_alerts(**labels), 30, "Alertmanager to hold the drained-backend alert")[0]
        assert alert["labels"]["severity"] == "warning" and alert["annotations"]["decided_by"] == "remediation", alert
        assert "lab-ctrl2" in alert["annotations"]["evidence"]
    finally:
        labtools.start_standins("lab-ctrl2")
    wait_until(lambda: ready_everywhere("lab-ctrl2"), 45, "nova/lab-ctrl2 restored everywhere", interval=0.5)
    wait_until(lambda: not open_alerts(**labels), 30, "the alert to be resolved at Alertmanager")
    assert sample(get(LOOP_METRICS), "openstack_ha_alerts_firing", site="lab", kind="backend_drained") == 0.0


def test_an_alert_forged_by_a_minion_reaches_no_alertmanager(applied):
    forged = {"site": "lab", "service": "nova", "backend": "lab-ctrl3", "why": "forged", "decided_by": "remediation"}
    for tag in ("openstack_ha/backend/drained", "salt/run/openstack_ha/backend/drained"):
        labtools.salt("lab-ctrl3", "event.send", tag, "data=" + json.dumps(forged))
    # An event the master itself fires afterwards (an operator's salt-run event.send) does
    # arrive: by then the forgeries, sent first, had every chance to arrive too.
    marker = {"site": "lab", "service": "marker", "why": "test marker"}
    labtools.runner("event.send", "salt/run/openstack_ha/alert/test_marker", "data=" + json.dumps(marker))
    wait_until(lambda: open_alerts(alertname="OpenStackHATestMarker", site="lab"), 30, "the master's own alert at Alertmanager")
    assert not open_alerts(alertname="OpenStackHABackendDrained", backend="lab-ctrl3", site="lab")
    labtools.runner("event.send", "salt/run/openstack_ha/resolved/test_marker", 'data={"site": "lab"}')
    wait_until(lambda: not open_alerts(alertname="OpenStackHATestMarker", site="lab"), 30, "the marker resolved")


def test_a_stopped_master_fires_loop_silent_and_the_loop_comes_back(applied):
    labctl.kill_pids(labctl.master_pids())
    try:
        wait_until(lambda: open_alerts(alertname="OpenStackHALoopSilent"), 90, "OpenStackHALoopSilent at Alertmanager", interval=1)
    finally:
        labctl.start_master()
        wait_until(lambda: labtools.salt("lab-ctrl*", "test.ping", wait=5)[1] == {c: True for c in labtools.CTRLS}, 60,
                   "every minion back with the master", interval=1)
    wait_until(lambda: not open_alerts(alertname="OpenStackHALoopSilent"), 90, "OpenStackHALoopSilent resolved", interval=1)
