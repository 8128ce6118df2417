"""Issue 7: a real Keystone on every controller (its database on Galera through the VIP), its
catalog made and kept by openstack_ha, endpoints repointed when the VIP moves."""

import json
import os
import signal
import time

import pytest

from lab import keystone_lab, labctl
from tests.integration import labtools
from tests.integration.labtools import ADDRESS, CTRLS, VIPS, vip_holders, wait_until

TYPES = {"identity", "image", "dns", "network", "compute", "placement", "proxy"}
SECRET = labctl.KEYSTONE_ADMIN["password"]


def orchestrate(*args, config=None):
    """``salt-run state.orchestrate openstack_ha.orch.catalog ARGS``: (retcode, the state's return)."""
    proc = labctl.run([os.path.join(labctl.VENV_BIN, "salt-run"), "-c", config or os.path.join(labctl.MASTER_DIR, "etc"),
                       "--out=json", "state.orchestrate", "openstack_ha.orch.catalog"] + list(args), check=False, timeout=120)
    assert SECRET not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    states = next(iter(doc["data"].values()))
    assert isinstance(states, dict), states
    (ret,) = states.values()
    return doc.get("retcode"), ret


def managed(session):
    """{service/interface: (endpoint id, url)} of the catalog's managed services, from the admin API."""
    services = {s["id"]: s["name"] for s in session.services() if s["type"] in TYPES}
    return {"{}/{}".format(services[e["service_id"]], e["interface"]): (e["id"], e["url"])
            for e in session.endpoints() if e["service_id"] in services}


def client_view(session):
    """The catalog as an OpenStack client sees it: a token request and the catalog it returns."""
    return {"{}/{}".format(entry["name"], ep["interface"]): ep["url"]
            for entry in session.fresh_catalog() if entry["type"] in TYPES for ep in entry["endpoints"]}


def hosts(view):
    """The set of hosts (no ports) the endpoints of a catalog view name."""
    return {url.split("/")[2].rsplit(":", 1)[0] for url in view.values()}


def holder():
    (only,) = vip_holders(VIPS["public"])
    return only


def stop_keepalived(ctrl):
    """SIGTERM the controller's keepalived (it resigns: its VIPs move at once to a backup)."""
    pid = labtools.pidfile_pid(ctrl, "/run/keepalived.pid")
    assert pid and labctl.alive(pid)
    os.kill(pid, signal.SIGTERM)


def restore_keepalived(ctrl):
    """Start the controller's keepalived again (what stop_keepalived broke, nothing else) and
    wait until it has taken the VIP back. The stopped one may still be exiting (removing its
    VIPs): a start that races it finds its live pid and fails, so wait for it first."""
    wait_until(lambda: (lambda p: not p or not labctl.alive(p))(labtools.pidfile_pid(ctrl, "/run/keepalived.pid")), 20,
               "the stopped keepalived on %s to exit" % ctrl, interval=0.1)
    rc, results = labtools.salt(ctrl, "state.sls", "openstack_ha.keepalived")
    assert rc == 0, labtools.failed_states(results) or results
    wait_until(lambda: vip_holders(VIPS["public"]) == [ctrl], 20, "%s to take the VIP back" % ctrl, interval=0.2)


def wipe_catalog(session):
    """Remove every service of the model's types (and their endpoints) from the catalog."""
    services = [s for s in session.services() if s["type"] in TYPES]
    for endpoint in session.endpoints():
        if endpoint["service_id"] in {s["id"] for s in services}:
            session.delete_endpoint(endpoint["id"])
    for service in services:
        session.request("DELETE", "/services/" + service["id"], ok=(204,))


# The endpoint mode the lab's pillar holds now (the master's loop has acted on it).
_MODE = {"mode": None}


def endpoint_mode(mode):
    """Put the site in ``mode``, wait until the master's loop acts on it, and bring the
    catalog in line with it (whatever an earlier test left)."""
    if _MODE["mode"] != mode:
        labtools.site_change_seen(lambda: keystone_lab.set_endpoint_mode(mode))
        _MODE.update(mode=mode)
    ret = labtools.runner("openstack_ha.catalog")
    assert ret["result"] is True, ret


@pytest.fixture(scope="module")
def keystone(applied):
    keystone_lab.set_endpoint_mode("vip")
    _MODE.update(mode="vip")
    keystone_lab.deploy()
    session = keystone_lab.admin_session()
    yield session
    keystone_lab.set_endpoint_mode("vip")
    _MODE.update(mode="vip")
    labtools.runner("openstack_ha.catalog")
    # Back to the stand-ins the other test files expect, whichever of them run after this one.
    for ctrl, _ in labctl.CONTROLLERS:
        keystone_lab.stop(ctrl)
        labtools.start_standins(ctrl)


@pytest.fixture
def vip_catalog(keystone):
    """The catalog in vip mode, as the pillar wants it."""
    endpoint_mode("vip")
    return keystone


@pytest.fixture
def active_catalog(keystone):
    """The catalog in active_controller mode, pointing at the VIP's holder."""
    endpoint_mode("active_controller")
    return keystone


def test_keystone_runs_on_every_controller_behind_haproxy(keystone):
    for ctrl in CTRLS:
        assert labtools.http_json(ADDRESS[ctrl], 5000, "/v3")["version"]["status"] == "stable"
    assert labtools.http_json(VIPS["public"], 5000, "/v3")["version"]["status"] == "stable"
    assert labctl.keystone_running(CTRLS[0])


def test_catalog_state_creates_the_catalog_from_nothing_and_a_second_run_changes_nothing(vip_catalog):
    keystone = vip_catalog
    wipe_catalog(keystone)
    rc, ret = orchestrate("test=True")
    assert ret["result"] is None and len([k for k in ret["changes"] if "/" in k]) == 21
    assert managed(keystone) == {}, "test=True changed the catalog"
    rc, ret = orchestrate()
    assert rc == 0 and ret["result"] is True, ret
    assert ret["changes"]["nova/public"] == {"old": None, "new": "http://openstack.lab.example:8774/v2.1"}
    assert ret["changes"]["service nova"] == {"old": None, "new": "compute"}
    seen = client_view(keystone)
    assert len(seen) == 21
    assert seen["keystone/public"] == "http://openstack.lab.example:5000/v3"
    assert seen["nova/internal"] == "http://openstack-internal.lab.example:8774/v2.1"
    assert seen["glance/admin"] == "http://openstack-internal.lab.example:9292"
    rc, ret = orchestrate()
    assert rc == 0 and ret["result"] is True and ret["changes"] == {}, ret


def test_a_url_changed_by_hand_is_put_back_in_place(vip_catalog):
    keystone = vip_catalog
    before = managed(keystone)
    endpoint_id = before["nova/public"][0]
    keystone.update_endpoint(endpoint_id, "http://wrong.example:1/")
    rc, ret = orchestrate("test=True")
    assert ret["result"] is None and ret["changes"] == {"nova/public": {"old": "http://wrong.example:1/",
                                                                      "new": "http://openstack.lab.example:8774/v2.1"}}
    assert managed(keystone)["nova/public"][1] == "http://wrong.example:1/"
    rc, ret = orchestrate()
    assert ret["result"] is True and list(ret["changes"]) == ["nova/public"]
    assert managed(keystone) == before  # same ids, same URLs: updated in place, not recreated


def test_status_shows_the_catalog(vip_catalog):
    summary = labtools.runner("openstack_ha.status")["lab"]
    assert summary["catalog"]["ok"] is True and summary["catalog"]["mode"] == "vip"
    assert len(summary["catalog"]["endpoints"]) == 21


def test_vip_mode_after_a_vip_move_the_catalog_is_unchanged_and_drift_is_repaired(vip_catalog):
    keystone = vip_catalog
    before = managed(keystone)
    keystone.update_endpoint(before["placement/internal"][0], "http://drifted.example:1/")
    old = holder()
    events = labtools.MasterEvents()
    try:
        stop_keepalived(old)
        wait_until(lambda: (lambda h: h and old not in h)(vip_holders(VIPS["public"])), 10, "the VIP to move", interval=0.1)
        event = events.wait("openstack_ha/endpoint/repointed", 20)
        assert event is not None, "the drift was not repaired after the VIP move"
        assert event["data"]["endpoints"] == [{"service": "placement", "interface": "internal", "region": "lab-r",
                                               "old": "http://drifted.example:1/", "new": "http://openstack-internal.lab.example:8778"}]
        assert managed(keystone) == before
    finally:
        events.close()
        restore_keepalived(old)


def test_wrong_credentials_or_no_keystone_a_clear_error_and_nothing_changed(vip_catalog, tmp_path):
    keystone = vip_catalog
    before = managed(keystone)
    for name, admin, expected in (
            ("wrong-password", dict(labctl.KEYSTONE_ADMIN, password="not-the-password"), "refused the admin credentials (401)"),
            ("unreachable", dict(labctl.KEYSTONE_ADMIN, auth_url="http://127.0.0.1:9/v3"), "no Keystone answered")):
        config = dict(labctl.master_config(), openstack_ha_keystone={"lab": admin})
        confdir = tmp_path / name
        confdir.mkdir()
        (confdir / "master").write_text(json.dumps(config))
        proc = labctl.run([os.path.join(labctl.VENV_BIN, "salt-run"), "-c", str(confdir), "--out=json", "openstack_ha.catalog"],
                          check=False, timeout=120)
        ret = json.loads(proc.stdout)
        assert ret["result"] is False and expected in ret["comment"], ret
        assert "not-the-password" not in proc.stdout + proc.stderr
    assert managed(keystone) == before
    rc, ret = orchestrate()
    assert ret["result"] is True and ret["changes"] == {}


def test_active_controller_mode_repoints_every_endpoint_to_the_new_holder(active_catalog):
    keystone = active_catalog
    old = holder()
    assert set(client_view(keystone).values()) >= {"http://{}:8774/v2.1".format(ADDRESS[old])}
    assert hosts(client_view(keystone)) == {ADDRESS[old]}
    events = labtools.MasterEvents()
    try:
        killed, since = time.monotonic(), time.time()
        stop_keepalived(old)
        event = events.wait("openstack_ha/endpoint/repointed", 20)
        took = time.monotonic() - killed
        assert event is not None, "no repoint after the holder lost the VIP"
        new = vip_holders(VIPS["public"])
        assert len(new) == 1 and new[0] != old
        # The VIPs leave one VRRP instance at a time: a first repoint may cover those moved so
        # far (the controllers' signed reports show each step), the next one the rest.
        seen = wait_until(lambda: (lambda v: v if len(v) == 21 and hosts(v) == {ADDRESS[new[0]]} else None)(client_view(keystone)),
                          10, "every endpoint on the new holder", interval=0.2)
        assert hosts(seen) == {ADDRESS[new[0]]}, seen
        moved = {(e["old"].split("/")[2], e["new"].split("/")[2]) for d in labtools.decisions()
                 if d.get("what") == "repoint" and d.get("time", 0) >= since for e in d.get("endpoints") or []}
        assert moved >= {("{}:5000".format(ADDRESS[old]), "{}:5000".format(ADDRESS[new[0]]))}, moved
        print("first repoint of {} endpoints {:.2f} s after the holder's keepalived stopped".format(len(event["data"]["endpoints"]), took))
    finally:
        events.close()
        restore_keepalived(old)
    wait_until(lambda: hosts(client_view(keystone)) == {ADDRESS[old]}, 20,
               "the catalog to follow the VIP back to %s" % old, interval=0.5)


def test_unreachable_keystone_alerts_changes_nothing_and_the_next_event_retries(active_catalog):
    keystone = active_catalog
    old = holder()
    for ctrl in CTRLS:
        keystone_lab.stop(ctrl)
    events = labtools.MasterEvents()
    try:
        stop_keepalived(old)
        alert = events.wait("openstack_ha/alert/catalog_unreachable", 20)
        assert alert is not None and "no Keystone answered" in alert["data"]["why"]
        assert SECRET not in json.dumps(alert["data"])
        new = vip_holders(VIPS["public"])
        for ctrl, address in labctl.CONTROLLERS:
            keystone_lab.start(ctrl, address, keystone_lab.identity_port(), wait=60)
        event = events.wait("openstack_ha/endpoint/repointed", 40)
        assert event is not None, "the next event did not retry the repoint"
        assert hosts(client_view(keystone)) == {ADDRESS[new[0]]}
    finally:
        events.close()
        for ctrl, address in labctl.CONTROLLERS:
            keystone_lab.start(ctrl, address, keystone_lab.identity_port())
        restore_keepalived(old)
    # The loop repoints the catalog back to the old holder: let it finish before the next test
    # compares the catalog with itself.
    wait_until(lambda: hosts(client_view(keystone)) == {ADDRESS[old]}, 30,
               "the catalog to follow the VIP back to %s" % old, interval=0.5)
