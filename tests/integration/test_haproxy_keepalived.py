"""HAProxy and keepalived in the lab: every API behind a moving VIP, reloads that drop nothing."""

import os
import re
import signal
import time

import pytest

from tests.integration import labtools
from tests.integration.labtools import CTRLS, VIPS, changed_states, pidfile_pid, sh, vip_holders, wait_until

SERVICES = {"keystone": 5000, "glance": 9292, "designate": 9001, "neutron": 9696, "nova": 8774, "placement": 8778, "proxy": 5668}


def haproxy_servers(ctrl):
    rc, result = labtools.salt(ctrl, "openstack_ha_haproxy.servers")
    assert rc == 0, result
    return result[ctrl]


def holder(vip="public"):
    return wait_until(lambda: (lambda h: h[0] if len(h) == 1 else None)(vip_holders(VIPS[vip])), 10, "exactly one holder of the %s VIP" % vip)


def test_every_controller_runs_haproxy_and_keepalived(applied):
    for ctrl in CTRLS:
        assert pidfile_pid(ctrl, "/run/haproxy.pid"), ctrl
        assert pidfile_pid(ctrl, "/run/keepalived.pid"), ctrl
        assert sh(ctrl, "sysctl -n net.ipv4.ip_nonlocal_bind").strip() == "1"
        assert sh(ctrl, "sysctl -n net.ipv6.ip_nonlocal_bind").strip() == "1"  # the public VIP is dual-stack
        assert sh(ctrl, "stat -c %a /run/haproxy/admin.sock").strip() == "600"


def test_exactly_one_controller_holds_each_vip(applied):
    for vip, address in VIPS.items():
        # highest priority (first controller) wins once VRRP has settled (a few adverts)
        wait_until(lambda: vip_holders(address) == ["lab-ctrl1"], 10, "lab-ctrl1 alone to hold %s" % vip)


@pytest.fixture
def serving(applied):
    """Every backend of every service ready in every HAProxy (an earlier file's drain is
    restored by the loop after its cooldown: the round robin below needs all three)."""
    wait_until(labtools.nothing_drained, 90, "every backend ready in every HAProxy", interval=1)


def test_each_service_answers_on_the_vip_from_every_backend(serving):
    for service, port in SERVICES.items():
        seen = set()
        for _ in range(6):
            body = labtools.http_get(VIPS["public"], port)
            assert body and body["service"] == service, (service, body)
            seen.add(body["controller"])
        assert seen == set(CTRLS), (service, seen)  # round robin over all three backends


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_each_service_answers_on_the_dual_stack_vip_in_both_families(serving, family):
    """Every API through the public VIP's address of each family, from every backend (the
    backends are the controllers' IPv4 addresses: the lab's first network)."""
    address = VIPS["public" if family == "ipv4" else "public/ipv6"]
    wait_until(lambda: vip_holders(address) == ["lab-ctrl1"], 15, "lab-ctrl1 alone to hold %s" % address)
    for service, port in SERVICES.items():
        seen = {(labtools.http_get(address, port) or {}).get("controller") for _ in range(6)}
        assert seen == set(CTRLS), (service, address, seen)


def test_second_apply_changes_nothing(applied):
    rc, result = labtools.apply()
    assert rc == 0
    assert {c: changed_states(result[c]) for c in CTRLS} == {c: [] for c in CTRLS}


def test_test_mode_reports_what_would_change_and_changes_nothing(applied):
    override = 'pillar={"openstack_ha": {"haproxy": {"maxconn": 5000}}}'
    before = sh("lab-ctrl2", "sha256sum /etc/haproxy/haproxy.cfg")
    worker = sh("lab-ctrl2", "cat /run/haproxy.pid")
    rc, result = labtools.apply("lab-ctrl2", override, "test=True")
    assert rc == 0
    ret = result["lab-ctrl2"]
    pending = {key.split("_|-")[1]: r for key, r in ret.items() if r["result"] is None}
    assert set(pending) == {"openstack_ha-haproxy-config", "openstack_ha-haproxy-running"}, pending
    assert "would have been reloaded" in pending["openstack_ha-haproxy-running"]["comment"]
    assert sh("lab-ctrl2", "sha256sum /etc/haproxy/haproxy.cfg") == before
    assert sh("lab-ctrl2", "cat /run/haproxy.pid") == worker


def test_invalid_rendered_config_fails_and_the_old_haproxy_keeps_serving(applied):
    before = sh("lab-ctrl1", "sha256sum /etc/haproxy/haproxy.cfg")
    pid = pidfile_pid("lab-ctrl1", "/run/haproxy.pid")
    rc, result = labtools.apply("lab-ctrl1", 'pillar={"openstack_ha": {"services": {"nova": {"extra_options": ["option httpchk-bogus GET /"]}}}}')
    assert rc != 0
    config = [r for k, r in result["lab-ctrl1"].items() if "openstack_ha-haproxy-config" in k][0]
    assert config["result"] is False
    assert "unknown option 'httpchk-bogus'" in config["comment"]  # HAProxy's own message
    assert sh("lab-ctrl1", "sha256sum /etc/haproxy/haproxy.cfg") == before
    assert pidfile_pid("lab-ctrl1", "/run/haproxy.pid") == pid
    assert labtools.http_get(VIPS["public"], SERVICES["nova"])["service"] == "nova"


def test_a_dry_run_catches_what_haproxy_and_keepalived_would_reject(applied):
    """test=True renders each candidate and runs the program's own check on it: a rejected
    one fails the dry run with the program's message (Salt's file.managed skips check_cmd
    under test=True, so this used to say "would change" and fail only on the real run)."""
    before = sh("lab-ctrl1", "sha256sum /etc/haproxy/haproxy.cfg /etc/keepalived/keepalived.conf")
    rc, result = labtools.apply("lab-ctrl1", "test=True",
                                'pillar={"openstack_ha": {"services": {"nova": {"extra_options": ["option httpchk-bogus GET /"]}}}}')
    assert rc != 0
    config = [r for k, r in result["lab-ctrl1"].items() if "openstack_ha-haproxy-config" in k][0]
    assert config["result"] is False and "would be rejected by `/usr/sbin/haproxy`" in config["comment"], config
    assert "unknown option 'httpchk-bogus'" in config["comment"]
    assert "<candidate>" in config["comment"] and "/tmp/" not in config["comment"]
    keepalived = [r for k, r in result["lab-ctrl1"].items() if "openstack_ha-keepalived-config" in k][0]
    assert keepalived["result"] is True, keepalived  # unchanged and accepted
    # an accepted change: "would change", the check named
    rc, result = labtools.apply("lab-ctrl1", "test=True", 'pillar={"openstack_ha": {"haproxy": {"maxconn": 5001}}}')
    config = [r for k, r in result["lab-ctrl1"].items() if "openstack_ha-haproxy-config" in k][0]
    assert config["result"] is None and "haproxy accepts it" in config["comment"], config
    assert sh("lab-ctrl1", "sha256sum /etc/haproxy/haproxy.cfg /etc/keepalived/keepalived.conf") == before


def test_a_runtime_drain_survives_a_config_change_reload(applied):
    rc, result = labtools.salt("lab-ctrl1", "openstack_ha_haproxy.set_server_state", "nova", "lab-ctrl2", "drain")
    assert rc == 0 and result["lab-ctrl1"]["changed"] is True
    try:
        rc, result = labtools.apply("lab-ctrl1", 'pillar={"openstack_ha": {"haproxy": {"maxconn": 5000}}}')
        assert rc == 0
        reload = [r for k, r in result["lab-ctrl1"].items() if "openstack_ha-haproxy-running" in k][0]
        assert "reloaded" in reload["changes"].get("haproxy", ""), reload
        assert "maxconn 5000" in sh("lab-ctrl1", "cat /etc/haproxy/haproxy.cfg")
        assert haproxy_servers("lab-ctrl1")["nova"]["lab-ctrl2"]["admin"] == "drain"
        # What the beacons' reports and the verification carry says the same, in one read.
        rc, states = labtools.salt("lab-ctrl1", "openstack_ha_haproxy.admin_states")
        assert rc == 0 and states["lab-ctrl1"]["nova/lab-ctrl2"] == "drain" and states["lab-ctrl1"]["nova/lab-ctrl1"] == "ready"
        # The drained backend gets no new requests through this HAProxy.
        seen = {labtools.http_get(VIPS["public"], SERVICES["nova"])["controller"] for _ in range(6)}
        assert seen == {"lab-ctrl1", "lab-ctrl3"}
    finally:
        labtools.salt("lab-ctrl1", "openstack_ha_haproxy.set_server_state", "nova", "lab-ctrl2", "ready")
        rc, _ = labtools.apply("lab-ctrl1")
        assert rc == 0


def galera_check_ports(ctrl):
    """{server: check port} of the Galera listener, as HAProxy on ``ctrl`` runs it now."""
    out = sh(ctrl, "echo 'show servers state galera' | socat stdio /run/haproxy/admin.sock")
    return {f[3]: f[21] for f in (line.split() for line in out.splitlines()) if len(f) > 21 and f[1] == "galera"}


def test_a_changed_check_port_is_not_undone_by_the_saved_server_state(applied):
    # HAProxy applies a saved server's ports over the configuration's: without pruning, the
    # Galera listener switched to plain TCP checks would go on checking the health port.
    assert set(galera_check_ports("lab-ctrl1").values()) == {"9200"}
    rc, result = labtools.salt("lab-ctrl1", "openstack_ha_haproxy.set_server_state", "nova", "lab-ctrl2", "drain")
    assert rc == 0
    try:
        rc, result = labtools.salt("lab-ctrl1", "state.sls", "openstack_ha.haproxy", 'pillar={"openstack_ha": {"galera": {"check": "tcp"}}}')
        assert rc == 0, result
        assert "port 9200" not in sh("lab-ctrl1", "grep -A8 '^listen galera' /etc/haproxy/haproxy.cfg")
        assert set(galera_check_ports("lab-ctrl1").values()) <= {"0", "3306"}, galera_check_ports("lab-ctrl1")
        # Servers whose definition did not change keep their runtime state.
        assert haproxy_servers("lab-ctrl1")["nova"]["lab-ctrl2"]["admin"] == "drain"
    finally:
        labtools.salt("lab-ctrl1", "openstack_ha_haproxy.set_server_state", "nova", "lab-ctrl2", "ready")
        rc, result = labtools.salt("lab-ctrl1", "state.sls", "openstack_ha.haproxy")
        assert rc == 0, result
    assert set(galera_check_ports("lab-ctrl1").values()) == {"9200"}


def test_killing_haproxy_on_the_holder_moves_the_vip(applied):
    old = holder()
    master = pidfile_pid(old, "/run/haproxy.pid")
    workers = sh(old, "pgrep -P %d || true" % master).split()  # children of this master only
    for pid in [master] + [int(w) for w in workers]:
        os.kill(pid, signal.SIGKILL)
    new = wait_until(lambda: (lambda h: h[0] if len(h) == 1 and h[0] != old else None)(vip_holders(VIPS["public"])), 10, "the VIP to move")
    assert new != old
    assert labtools.http_get(VIPS["public"], SERVICES["keystone"])["service"] == "keystone"
    # The IPv6 address of the public VIP (its own VRRP instance) moves the same way.
    new6 = wait_until(lambda: (lambda h: h[0] if len(h) == 1 and h[0] != old else None)(vip_holders(VIPS["public/ipv6"])), 10,
                      "the IPv6 VIP to move")
    assert labtools.http_get(VIPS["public/ipv6"], SERVICES["keystone"])["service"] == "keystone", new6
    # Salt heals it: the next apply starts HAProxy again and the first controller takes the VIP back.
    rc, _ = labtools.apply(old)
    assert rc == 0
    wait_until(lambda: vip_holders(VIPS["public"]) == [old], 15, "%s to take the VIP back" % old)
    wait_until(lambda: vip_holders(VIPS["public/ipv6"]) == [old], 15, "%s to take the IPv6 VIP back" % old)


def test_killing_keepalived_hard_on_the_holder_moves_the_vip(applied):
    old = holder()
    events = labtools.MasterEvents()
    # Namespaces share the PID space: only this controller's pidfiles name its processes.
    for pid in (pidfile_pid(old, "/run/vrrp.pid"), pidfile_pid(old, "/run/keepalived.pid")):  # VRRP child first: no graceful resign
        if pid and labtools.labctl.alive(pid):
            os.kill(pid, signal.SIGKILL)
    try:
        wait_until(lambda: any(h != old for h in vip_holders(VIPS["public"])), 10, "another controller to take the VIP")
        new = [h for h in vip_holders(VIPS["public"]) if h != old][0]
        # The new holder's VIP beacon reports it from the kernel's address notice, not at its tick.
        reported = events.wait("salt/beacon/%s/openstack_ha_vip/change" % new, 15,
                               lambda e: e["data"].get("watched") is True and "public" in e["data"].get("held", []))
        assert reported, "no change event from %s's VIP watcher reached the master" % new
    finally:
        events.close()
        # keepalived killed with SIGKILL cannot remove its addresses: the test removes them.
        for vip in VIPS.values():
            sh(old, "ip addr del %s/%d dev eth0 2>/dev/null || true" % (vip, labtools.vip_prefix(vip)))
        sh(old, "rm -f /run/keepalived.pid /run/vrrp.pid")
    assert len(vip_holders(VIPS["public"])) == 1
    rc, _ = labtools.apply(old)
    assert rc == 0
    wait_until(lambda: vip_holders(VIPS["public"]) == [old], 15, "%s to take the VIP back" % old)


def test_reloading_keepalived_on_the_holder_keeps_every_vip_in_place(applied):
    """A configuration change reloads keepalived (SIGHUP) on every controller, the VIP holder
    too (a controller replaced, a VIP added): its VRRP process survives each reload and no VIP
    moves. (keepalived 2.2 at real-time priority on a host without CAP_SYS_RESOURCE killed its
    own VRRP process at every reload: the VIPs went away and came back, resetting clients.)"""
    old = holder()
    parent, vrrp = pidfile_pid(old, "/run/keepalived.pid"), pidfile_pid(old, "/run/vrrp.pid")
    assert parent and vrrp
    events = labtools.MasterEvents()
    events.collect("salt/beacon/")
    try:
        for _ in range(5):
            os.kill(parent, signal.SIGHUP)
            # An observation window, not a wait for something: a killed VRRP process is
            # respawned under a new pid within a second, and a VIP moves within 0.7 s.
            time.sleep(2)
            assert pidfile_pid(old, "/run/vrrp.pid") == vrrp and labtools.labctl.alive(vrrp), "the VRRP process did not survive a reload"
        assert {vip: vip_holders(address) for vip, address in VIPS.items()} == {vip: [old] for vip in VIPS}
        # ... and still scheduled as its configuration asks (at real-time priority without
        # CAP_SYS_RESOURCE, a reload left it killed or, on an idle host, silently not real-time).
        config = sh(old, "cat /etc/keepalived/keepalived.conf")
        stat = open("/proc/%d/stat" % vrrp).read().rsplit(")", 1)[1].split()
        nice, rtprio, policy = int(stat[16]), int(stat[37]), int(stat[38])
        wanted = re.search(r"^\s*vrrp_rt_priority (\d+)$", config, re.M)
        if wanted:
            assert (policy, rtprio) == (2, int(wanted.group(1))), (policy, rtprio)  # SCHED_RR
        else:
            assert (policy, nice) == (0, int(re.search(r"^\s*vrrp_priority (-?\d+)$", config, re.M).group(1))), (policy, nice)
    finally:
        events.close()
    moves = [(tag, data.get("held")) for _, tag, data in events.seen if tag.endswith("/openstack_ha_vip/change")]
    assert moves == [], moves


def test_status_shows_every_backend_on_every_haproxy_and_the_vip_holder(applied):
    wait_until(lambda: vip_holders(VIPS["public"]) == ["lab-ctrl1"], 15, "lab-ctrl1 to hold the VIP")
    table = labtools.labctl.salt_cmd("salt-run", "openstack_ha.status").stdout
    assert "VIP public     held by lab-ctrl1" in table
    for service in SERVICES:
        for server in CTRLS:
            row = [line for line in table.splitlines() if line.startswith("%s/%s " % (service, server))]
            assert row and row[0].split()[1:] == ["UP", "UP", "UP"], (service, server, table)
    import json
    data = json.loads(labtools.labctl.salt_cmd("salt-run", "--out=json", "openstack_ha.status").stdout)
    assert data["lab"]["backends"]["nova"]["lab-ctrl2"] == {c: "UP" for c in CTRLS}
    assert data["lab"]["vip_holders"] == {"public": ["lab-ctrl1"], "public/ipv6": ["lab-ctrl1"], "internal": ["lab-ctrl1"]}
