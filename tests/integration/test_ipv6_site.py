"""The lab as an IPv6-only site: the same controllers re-addressed on fd00:213::/64 by pillar
alone. Galera (with its history) and RabbitMQ cluster over IPv6, every API answers through
the IPv6 VIPs, Keystone reaches its database through the IPv6 Galera VIP, and
``active_controller`` repointing writes bracketed URLs that Keystone serves and clients follow.

This module changes the whole lab, so it runs after every other one but the replacement and
the teardown (see conftest.py), and puts the dual-stack site back afterwards.
"""

import concurrent.futures
import copy
import os
import signal

import pytest
import yaml

from lab import keystone_lab, labctl
from tests.conftest import REPO, ipv6_only
from tests.integration import labtools
from tests.integration.galera_tools import node_sql
from tests.integration.labtools import CTRLS, sh, vip_holders, wait_until


SITE_FILE = os.path.join(REPO, "pillar", "openstack_ha", "sites", "lab.sls")
ADDRESS6 = labctl.ADDRESSES6
VIP6 = {"public": "fd00:213::100", "internal": "fd00:213::101"}
SERVICES = dict(labctl.lab_services())


def lab_site():
    with open(SITE_FILE) as fh:
        return yaml.safe_load(fh)


def galera_uuid():
    return node_sql("lab-ctrl1", "SHOW STATUS LIKE 'wsrep_cluster_state_uuid'")[0][1]


def readdress(document):
    """Move the running lab to the site in ``document`` (None: the repository's): the loop is
    paused (it would start again the nodes stopped on purpose, on their old addresses), the
    clusters are stopped (an address family cannot change under a running cluster), the
    pillar is switched, the headline apply writes every configuration (Galera refuses to start
    over its history), ``galera_recover`` brings the cluster back from the most advanced node,
    a second apply converges and the loop resumes. Returns the second apply's results."""
    paused = labtools.runner("openstack_ha.pause", "reason=re-addressing the lab")
    assert paused.get("paused"), paused
    # Every node at once (the recovery below starts from the most advanced one, whichever it is).
    rc, out = labtools.salt("-L", ",".join(CTRLS), "openstack_ha_galera.stop")
    assert rc == 0 and sorted(out) == CTRLS, out
    with concurrent.futures.ThreadPoolExecutor(len(CTRLS)) as pool:
        list(pool.map(lambda ctrl: sh(ctrl, "rabbitmqctl shutdown >/dev/null 2>&1 || true"), CTRLS))
    labtools.write_site(document)
    labtools.salt("lab-ctrl*", "saltutil.refresh_pillar", "wait=True")
    labtools.apply()  # every file rewritten; Galera's member state refuses to bootstrap over data
    done = labtools.runner("openstack_ha.galera_recover", "confirm=True")
    assert "failed" not in done, done
    rc, results = labtools.apply()
    assert rc == 0, labtools.failed_states(results)
    assert labtools.runner("openstack_ha.resume").get("resumed") is True
    return results


@pytest.fixture(scope="module")
def ipv6_site(applied):
    before = galera_uuid()
    document = lab_site()
    ipv6_only(document["openstack_ha"])
    readdress(document)
    yield {"document": document, "uuid": before}
    for ctrl in CTRLS:
        keystone_lab.stop(ctrl)
        labtools.start_standins(ctrl)
    readdress(None)  # the dual-stack lab again, for the replacement test that follows


def test_galera_keeps_its_history_and_replicates_over_ipv6(ipv6_site):
    assert galera_uuid() == ipv6_site["uuid"]  # recovered, not bootstrapped afresh
    for ctrl in CTRLS:
        status = dict(node_sql(ctrl, "SHOW STATUS LIKE 'wsrep_%'"))
        assert status["wsrep_cluster_size"] == "3" and status["wsrep_local_state_comment"] == "Synced", (ctrl, status)
        assert status["wsrep_incoming_addresses"].count("[fd00:213::") == 3, status["wsrep_incoming_addresses"]
        listening = sh(ctrl, "ss -Htln")
        assert "[%s]:4567" % ADDRESS6[ctrl] in listening and "%s:4567" % labtools.ADDRESS[ctrl] not in listening, listening


def test_rabbitmq_clusters_over_ipv6(ipv6_site):
    for ctrl in CTRLS:
        rc, out = labtools.salt(ctrl, "openstack_ha_rabbitmq.cluster_status")
        status = out[ctrl]
        assert rc == 0 and sorted(status["running_nodes"]) == ["rabbit@" + c for c in CTRLS], status
    # the inter-node links of the Erlang distribution run over IPv6
    links = sh("lab-ctrl1", "ss -Htn state established '( sport = :25672 or dport = :25672 )'")
    assert "[fd00:213::12]" in links or "[fd00:213::13]" in links, links
    rc, out = labtools.salt("lab-ctrl1", "openstack_ha_rabbitmq.transport_url")
    assert "@[fd00:213::11]:5672," in out["lab-ctrl1"]


def test_every_api_answers_through_the_ipv6_vip_and_the_vip_fails_over(ipv6_site):
    wait_until(lambda: vip_holders(VIP6["public"]) == ["lab-ctrl1"], 20, "lab-ctrl1 to hold the IPv6 VIP")
    assert not vip_holders("10.213.0.100")  # the IPv4 VIP is gone with the pillar's IPv4 network
    for service, port in SERVICES.items():
        seen = {(labtools.http_get(VIP6["public"], port) or {}).get("controller") for _ in range(6)}
        assert seen == set(CTRLS), (service, seen)
    old = "lab-ctrl1"
    pid = labtools.pidfile_pid(old, "/run/keepalived.pid")
    os.kill(pid, signal.SIGTERM)
    try:
        new = wait_until(lambda: (lambda h: h[0] if len(h) == 1 and h[0] != old else None)(vip_holders(VIP6["public"])), 15,
                         "the IPv6 VIP to move")
        assert labtools.http_get(VIP6["public"], SERVICES["nova"])["service"] == "nova", new
    finally:
        # One read of the pid file per try: it may vanish between two reads.
        wait_until(lambda: (lambda p: not p or not labctl.alive(p))(labtools.pidfile_pid(old, "/run/keepalived.pid")), 20,
                   "keepalived to exit", interval=0.1)
        rc, results = labtools.salt(old, "state.sls", "openstack_ha.keepalived")
        assert rc == 0, labtools.failed_states(results)
    wait_until(lambda: vip_holders(VIP6["public"]) == [old], 20, "%s to take the IPv6 VIP back" % old)


def test_active_controller_repointing_writes_bracketed_urls_keystone_serves(ipv6_site):
    keystone_lab.deploy()  # Keystone on both families; its database through [fd00:213::101]:3306
    document = copy.deepcopy(ipv6_site["document"])
    document["openstack_ha"]["keystone"]["endpoint_mode"] = "active_controller"
    old = vip_holders(VIP6["public"])[0]
    try:
        labtools.site_change_seen(lambda: labtools.write_site(document))
        ret = labtools.runner("openstack_ha.catalog")
        assert ret["result"] is True, ret
        session = keystone_lab.admin_session(["http://[%s]:%d/v3" % (ADDRESS6[c], SERVICES["keystone"]) for c in CTRLS])

        def view():
            return {"{}/{}".format(e["name"], ep["interface"]): ep["url"] for e in session.fresh_catalog() for ep in e["endpoints"]}

        assert view()["keystone/public"] == "http://[%s]:%d/v3" % (ADDRESS6[old], SERVICES["keystone"])
        events = labtools.MasterEvents()
        try:
            os.kill(labtools.pidfile_pid(old, "/run/keepalived.pid"), signal.SIGTERM)
            assert events.wait("openstack_ha/endpoint/repointed", 30) is not None, "no repoint after the holder lost the VIP"
        finally:
            events.close()
        new = vip_holders(VIP6["public"])
        assert len(new) == 1 and new[0] != old
        # The VIPs leave one VRRP instance at a time: a first repoint may cover those moved so far.
        want = {"[%s]:%d" % (ADDRESS6[new[0]], SERVICES["keystone"])}
        seen = wait_until(lambda: (lambda v: v if {url.split("/")[2] for url in v.values() if "/v3" in url} == want else None)(view()),
                          10, "every identity endpoint on the new holder", interval=0.2)
        assert {url.split("/")[2] for url in seen.values() if "/v3" in url} == want
        # a client follows the catalog: the bracketed identity URL it was given answers
        body = labtools.http_json(ADDRESS6[new[0]], SERVICES["keystone"], "/v3")
        assert body and body["version"]["status"] == "stable", body
    finally:
        labtools.write_site(ipv6_site["document"])
        # One read of the pid file per try: it may vanish between two reads.
        wait_until(lambda: (lambda p: not p or not labctl.alive(p))(labtools.pidfile_pid(old, "/run/keepalived.pid")), 20,
                   "keepalived to exit", interval=0.1)
        labtools.salt(old, "state.sls", "openstack_ha.keepalived")
