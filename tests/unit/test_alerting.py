"""The loop's alerts for Alertmanager: which events count, what is sent, when it ends. The
delivery itself runs against a real Alertmanager in the lab (test_monitoring.py)."""

from tests.conftest import load_module

alerting = load_module("_utils/openstack_ha_alerting.py", "openstack_ha_alerting")
metrics_lib = load_module("_utils/openstack_ha_metrics.py", "openstack_ha_metrics")

DRAIN = {"what": "drain", "service": "nova", "backend": "c2", "why": "down on 3 of 3", "decided_by": "remediation",
         "evidence": {"c1": {"up": False}}, "site": "lab"}


def forwarder():
    sent = []
    fwd = alerting.Forwarder("http://am", metrics_lib.loop_metrics(), sender=lambda url, alerts: sent.extend(alerts))
    return fwd, sent


def test_only_the_masters_own_events_count():
    assert alerting.trusted("salt/run/openstack_ha/alert/last_backend", {"site": "lab"}) == "openstack_ha/alert/last_backend"
    assert alerting.trusted("openstack_ha/alert/last_backend", {"site": "lab"}) is None  # a minion may fire this tag
    assert alerting.trusted("salt/run/openstack_ha/alert/x", {"site": "lab", "cmd": "_minion_event"}) is None


def test_a_loop_drain_fires_and_the_restore_resolves_it():
    fwd, sent = forwarder()
    fired = fwd.handle("salt/run/openstack_ha/backend/drained", DRAIN, now=100.0)
    assert fired[0]["labels"] == {"alertname": "OpenStackHABackendDrained", "site": "lab", "kind": "backend_drained",
                                  "severity": "warning", "source": "openstack_ha", "service": "nova", "backend": "c2"}
    assert fired[0]["annotations"]["summary"] == "down on 3 of 3" and "endsAt" not in fired[0]
    assert fwd.handle("salt/run/openstack_ha/alert/last_backend", dict(DRAIN, what="alert", backend="c1"), now=101.0)
    ended = fwd.handle("salt/run/openstack_ha/backend/restored", dict(DRAIN, what="restore"), now=160.0)
    assert sorted(a["labels"]["alertname"] for a in ended) == ["OpenStackHABackendDrained", "OpenStackHALastBackend"]
    assert all(a["endsAt"] == "1970-01-01T00:02:40Z" for a in ended) and not fwd.open
    assert len(sent) == 4


def test_an_operators_planned_drain_is_no_alert_and_a_forged_one_is_ignored():
    fwd, sent = forwarder()
    assert fwd.handle("salt/run/openstack_ha/backend/drained", dict(DRAIN, decided_by="operator (salt-run)")) == []
    assert fwd.handle("openstack_ha/backend/drained", DRAIN) == []
    assert sent == [] and not fwd.open


def test_open_alerts_are_repeated_with_their_start_and_a_resolved_kind_ends():
    fwd, sent = forwarder()
    fwd.handle("salt/run/openstack_ha/alert/rabbitmq_node_down", {"site": "lab", "why": "c3 down", "evidence": {"x": "y" * 9000}},
               now=50.0)
    assert sent[0]["annotations"]["evidence"].endswith("...") and len(sent[0]["annotations"]["evidence"]) < 4100
    fwd.repeat_open()
    assert sent[1]["startsAt"] == sent[0]["startsAt"] == "1970-01-01T00:00:50Z"
    assert fwd.handle("salt/run/openstack_ha/resolved/rabbitmq_node_down", {"site": "other"}) == []
    assert fwd.handle("salt/run/openstack_ha/resolved/rabbitmq_node_down", {"site": "lab"}, now=70.0)[0]["endsAt"] == \
        "1970-01-01T00:01:10Z"


def test_an_unreachable_alertmanager_is_counted_not_raised():
    def refuse(url, alerts):
        raise OSError("connection refused")
    fwd = alerting.Forwarder("http://am", metrics_lib.loop_metrics(), sender=refuse)
    fwd.handle("salt/run/openstack_ha/backend/drained", DRAIN)
    assert fwd.metrics.posts.labels("failed")._value.get() == 1.0 and fwd.open


def test_an_alert_no_longer_raised_ends_but_a_drain_waits_for_its_restore():
    fwd, sent = forwarder()
    fwd.handle("salt/run/openstack_ha/alert/split_brain", {"site": "lab", "why": "two holders"}, now=0.0)
    fwd.handle("salt/run/openstack_ha/backend/drained", DRAIN, now=0.0)
    fwd.repeat_open(now=200.0)  # raised again within 5 x 60 s: still open
    fwd.handle("salt/run/openstack_ha/alert/split_brain", {"site": "lab", "why": "two holders"}, now=250.0)
    fwd.repeat_open(now=500.0)
    assert len(fwd.open) == 2
    del sent[:]
    fwd.repeat_open(now=600.0)
    ended = [a for a in sent if "endsAt" in a]
    assert [a["labels"]["alertname"] for a in ended] == ["OpenStackHASplitBrain"] and list(fwd.open)[0][1] == "backend_drained"


def test_a_drain_another_master_restored_ends_at_the_next_repeat():
    """Two masters: the restore was the other master's event; the shared records say so."""
    records = {"backends": {"nova/c2": {"state": "drain", "by": "remediation", "time": 1.0}}}
    sent = []
    fwd = alerting.Forwarder("http://am", sender=lambda url, alerts: sent.extend(alerts),
                             still_open=lambda key: alerting.drain_still_open(records, key))
    fwd.handle("salt/run/openstack_ha/backend/drained", DRAIN, now=0.0)
    fwd.repeat_open(now=60.0)
    assert len(fwd.open) == 1 and "endsAt" not in sent[-1]
    records["backends"]["nova/c2"] = {"state": "ready", "by": "remediation", "time": 61.0}
    fwd.repeat_open(now=120.0)
    assert not fwd.open and sent[-1]["endsAt"] == "1970-01-01T00:02:00Z"
    # A records store that cannot be read keeps the alert.
    fwd.handle("salt/run/openstack_ha/backend/drained", DRAIN, now=130.0)

    def away(key):
        raise OSError("store away")
    fwd.still_open = away
    fwd.repeat_open(now=190.0)
    assert len(fwd.open) == 1
