"""Metrics and alerts in the lab: HAProxy's exporter on every controller, the loop's metrics
on the master, and its alerts held by a real Alertmanager (Debian's, started by labctl)."""

import json
import os
import signal
import urllib.parse
import urllib.request

from lab import labctl
from tests.integration import labtools
from tests.integration.labtools import ADDRESS, ready_everywhere, standin_pid, wait_until

LOOP_METRICS = "http://{}:{}/metrics".format(labctl.BRIDGE_ADDR, labctl.LOOP_METRICS_PORT)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def sample(text, name, **labels):
    """The value of the sample ``name{labels}`` in Prometheus text ``text`` (labels matched
    as a subset), or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        head, _, value = line.rpartition(" ")
        if all('{}="{}"'.format(k, v) in head for k, v in labels.items()):
            return float(value)
    return None


def haproxy_up(on, service, server):
    text = get("http://{}:8405/metrics".format(ADDRESS[on]))
    return sample(text, "haproxy_server_status", proxy=service, server=server, state="UP")


def open_alerts(**labels):
    """The alerts Alertmanager holds open now whose labels include ``labels``."""
    query = urllib.parse.urlencode([("filter", '{}="{}"'.format(k, v)) for k, v in labels.items()] + [("active", "true")])
    alerts = json.loads(get("{}/api/v2/alerts?{}".format(labctl.ALERTMANAGER_URL, query)))
    return [a for a in alerts if a.get("status", {}).get("state") == "active"]


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
