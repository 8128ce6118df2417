"""MariaDB Galera in the lab: a real 3-node cluster behind HAProxy's single-writer listener."""

import subprocess
import threading
import time

import pytest

from tests.integration import labtools
from tests.integration.galera_tools import (all_synced, kill_node, mariadbd_pid, node_sql, statuses, table_digest,
                                            vip_sql)
from tests.integration.labtools import CTRLS, admin_states, changed_states, wait_until


@pytest.fixture(scope="module")
def cluster(applied):
    """The cluster the first apply formed, and its state UUID (asserted unchanged throughout)."""
    found = wait_until(all_synced, 120, "three Synced Galera nodes")
    uuids = {s["cluster_uuid"] for s in found.values()}
    assert len(uuids) == 1
    ok, out = vip_sql("CREATE TABLE IF NOT EXISTS oha_rows (id INT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB")
    assert ok, out
    return uuids.pop()


def healthy_cluster(uuid):
    found = wait_until(all_synced, 180, "three Synced Galera nodes")
    assert {s["cluster_uuid"] for s in found.values()} == {uuid}, found
    for ctrl in CTRLS:
        wait_until(lambda: set(admin_states("galera", ctrl).values()) == {"ready"}, 90, "galera/%s ready on every HAProxy" % ctrl, interval=0.5)


def test_apply_forms_one_cluster_of_three(cluster):
    found = statuses()
    assert {s["cluster_size"] for s in found.values()} == {3}
    assert {s["cluster_uuid"] for s in found.values()} == {cluster}
    assert all(s["healthy"] for s in found.values()), found
    table = labtools.labctl.salt_cmd("salt-run", "openstack_ha.status").stdout
    assert "GALERA  cluster size 3  state UUID " + cluster in table, table


def test_second_apply_changes_nothing_and_restarts_nothing(cluster):
    pids = {c: mariadbd_pid(c) for c in CTRLS}
    rc, result = labtools.apply()
    assert rc == 0, result
    assert {c: changed_states(result[c]) for c in CTRLS} == {c: [] for c in CTRLS}
    assert {c: mariadbd_pid(c) for c in CTRLS} == pids
    assert {s["cluster_uuid"] for s in statuses().values()} == {cluster}


def test_accounts_and_secrets(cluster):
    # The OpenStack database user works through the VIP; the config file holding the SST
    # password is not world-readable, and no state output shows a password.
    assert vip_sql("SELECT 1")[0]
    assert labtools.sh("lab-ctrl2", "stat -c '%a %U %G' /etc/mysql/mariadb.conf.d/60-openstack-ha-galera.cnf").split() == ["640", "root", "mysql"]
    rc, result = labtools.apply("lab-ctrl2", "test=True")
    assert "lab-sst-secret" not in str(result) and "lab-keystone-db-secret" not in str(result)


class Writer:
    """Inserts numbered rows through the VIP, one connection each, and remembers the commits."""

    def __init__(self):
        self.committed, self.failed, self.stop = [], 0, threading.Event()
        self.next_id = int(time.time() * 1000) % 100000000
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.next_id += 1
            ok, _ = vip_sql("INSERT INTO oha_rows VALUES (%d, 'row-%d')" % (self.next_id, self.next_id), timeout=2)
            if ok:
                self.committed.append(self.next_id)
            else:
                self.failed += 1
            time.sleep(0.02)


def test_writer_killed_writes_continue_and_every_commit_is_everywhere(cluster):
    writer = Writer()
    writer.thread.start()
    try:
        time.sleep(3)
        before = len(writer.committed)
        # lab-ctrl1's gcomm UUID as its peers know it (their health daemons list the view)
        old_uuid = statuses()["lab-ctrl2"]["members"]["lab-ctrl1"]
        killed_at = time.monotonic()
        kill_node("lab-ctrl1")  # the writer
        wait_until(lambda: len(writer.committed) > before + 20, 30, "writes to continue on the next node")
        recovered_after = time.monotonic() - killed_at
        time.sleep(2)
    finally:
        writer.stop.set()
        writer.thread.join(10)
    print("writes resumed %.2f s after the kill; %d committed, %d failed" % (recovered_after, len(writer.committed), writer.failed))
    # Its server was gone and its host refused the replication port: both survivors evicted that
    # UUID (galera:evict_dead_peers) rather than wait out Galera's suspect window.
    for ctrl in ("lab-ctrl2", "lab-ctrl3"):
        evictions = [(e["node"], e["uuid"], e["outcome"]) for e in statuses()[ctrl].get("evictions", [])]
        assert ("lab-ctrl1", old_uuid, "evicted") in evictions, (ctrl, evictions)
    # mysqld_safe never restarts a Galera node by itself; the state does, from its recovered position.
    rc, result = labtools.salt("lab-ctrl1", "state.apply", "openstack_ha.galera")
    assert rc == 0, result
    healthy_cluster(cluster)
    ids = ",".join(str(i) for i in writer.committed)
    for ctrl in CTRLS:
        present = node_sql(ctrl, "SELECT COUNT(*) FROM keystone.oha_rows WHERE id IN (%s)" % ids)[0][0]
        assert int(present) == len(writer.committed), ctrl
    digests = {c: table_digest(c) for c in CTRLS}
    assert len(set(digests.values())) == 1, digests
    # The killed node caught up by IST from its recovered position, not a full copy, under a new
    # gcomm UUID (the evicted one stays out).
    assert labtools.salt("lab-ctrl1", "openstack_ha_galera.last_join")[1]["lab-ctrl1"] == "IST"
    assert statuses()["lab-ctrl2"]["members"]["lab-ctrl1"] != old_uuid


def test_non_synced_node_is_drained_and_restored_through_the_loop(cluster):
    """Cut lab-ctrl3's link: it loses the Primary component and is drained from the Galera
    listener on both other HAProxies; with the link back it rejoins and is restored."""
    link = "oha-ctrl3-h"
    labtools.wait_out_cooldown()
    cut = time.time()
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    try:
        # A cut link is seen through probes that time out and a verification that waits for
        # the controller that cannot answer: slower than a crash, well within 30 s.
        for ctrl in ("lab-ctrl1", "lab-ctrl2"):
            wait_until(lambda: admin_states("galera", "lab-ctrl3", ["lab-ctrl1", "lab-ctrl2"]).get(ctrl) == "drain", 30,
                       "galera/lab-ctrl3 drained on %s" % ctrl, interval=0.5)
        ok, out = vip_sql("SELECT 1")
        assert ok, out
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    healthy_cluster(cluster)
    # A silent peer (its link cut: nothing refused) is Galera's to suspect, never evicted by the
    # health daemons: it rejoined above by itself.
    for ctrl in ("lab-ctrl1", "lab-ctrl2"):
        assert [e for e in statuses()[ctrl].get("evictions", []) if e["at"] >= cut] == [], ctrl
    # Restored by the loop (its decision record; the event bus may drop an event fired while
    # nobody reads it), after the cooldown that follows the drain.
    wait_until(lambda: [d for d in labtools.decisions() if d.get("service") == "galera" and d.get("backend") == "lab-ctrl3"
                        and d["what"] == "restore" and d["time"] >= cut], 30, "the loop's restore of galera/lab-ctrl3", interval=0.5)


def test_full_crash_recovers_with_no_commit_lost_and_the_same_uuid(cluster):
    assert vip_sql("INSERT INTO oha_rows VALUES (1, 'before-the-crash') ON DUPLICATE KEY UPDATE note = note")[0]
    before = {c: table_digest(c) for c in CTRLS}
    assert len(set(before.values())) == 1
    for ctrl in CTRLS:
        kill_node(ctrl, with_safe=True)
    # The state refuses to bootstrap over data; the runner shows its plan first.
    rc, result = labtools.salt("lab-ctrl1", "state.apply", "openstack_ha.galera")
    assert rc != 0 and "galera_recover" in str(result)
    plan = labtools.runner("openstack_ha.galera_recover")
    assert "confirm" in plan and len(plan["plan"]) == 4, plan
    assert all(mariadbd_pid(c) is None or not labtools.labctl.alive(mariadbd_pid(c)) for c in CTRLS)
    done = labtools.runner("openstack_ha.galera_recover", "confirm=True")
    assert "failed" not in done and len(done["done"]) == 5, done
    healthy_cluster(cluster)
    assert {c: table_digest(c) for c in CTRLS} == before


def test_replication_is_tls_and_a_node_without_the_sites_certificate_cannot_join(cluster, tmp_path):
    """galera:tls (the lab's pillar has it): the cluster formed over TLS; lab-ctrl3 with a
    certificate from another CA is refused by its peers and never joins; with its own
    certificate back (a state.apply rewrites it) it rejoins the same cluster."""
    options = node_sql("lab-ctrl1", "SELECT @@wsrep_provider_options")[0][0]
    assert "socket.ssl_cert = /etc/mysql/openstack-ha-tls/node.pem" in options and "socket.ssl = YES" in options, options
    assert labtools.sh("lab-ctrl1", "stat -c '%a %U %G' /etc/mysql/openstack-ha-tls/node.key").split() == ["640", "root", "mysql"]
    rogue = tmp_path / "rogue"
    rogue.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lab-ctrl3",
                    "-keyout", str(rogue / "node.key"), "-out", str(rogue / "node.pem")], check=True, capture_output=True)
    rc, result = labtools.salt("lab-ctrl3", "openstack_ha_galera.stop")
    assert rc == 0 and result["lab-ctrl3"] is True, result
    try:
        for name in ("node.pem", "node.key"):
            labtools.labctl.ctrl_run("lab-ctrl3", ["sh", "-c", "cat > /etc/mysql/openstack-ha-tls/" + name],
                                     input_text=(rogue / name).read_text())
        rc, result = labtools.salt("lab-ctrl3", "openstack_ha_galera.start", "timeout=45", timeout=300)
        assert rc != 0, "a node with a certificate of another CA started and joined: %s" % result
        others = {c: s for c, s in statuses().items() if c != "lab-ctrl3"}
        assert {s["cluster_size"] for s in others.values()} == {2}, others
        assert {s["cluster_uuid"] for s in others.values()} == {cluster}
    finally:
        labtools.salt("lab-ctrl3", "openstack_ha_galera.stop")
    rc, result = labtools.salt("lab-ctrl3", "state.apply", "openstack_ha.galera", timeout=900)
    assert rc == 0, labtools.failed_states(result) or result
    assert "openstack_ha-galera-tls-cert" in changed_states(result["lab-ctrl3"])
    healthy_cluster(cluster)
